"""``nextbest sim send``: an open-loop load generator for any Segment-compatible ``/v1/batch``.

Messages (dicts, or already-encoded JSON objects such as NDJSON lines) are grouped into
``/v1/batch`` bodies of ``batch_size`` messages and posted with HTTP Basic auth (the write key
is the user name, as Segment's HTTP API takes it) over a pool of ``concurrency`` keep-alive
connections.

Open loop: batch *i* is due at ``t0 + (messages before it) / rate``, whatever happened to the
batches before it. Latency is measured from that *due* time to the response, so when the
server or the sender falls behind, the time a batch spent waiting to leave counts as latency
(no coordinated omission). ``start lag`` says how late requests left: if it is large, the
sender or its connection pool, not the server, was the bottleneck.

Bounds: batches are due only within ``duration`` seconds, and no more than ``max_messages``
messages are taken from the input; the run also ends when the input does. A batch that could
not even start by ``duration + timeout`` seconds is not sent and is counted as *missed*; every
request has ``timeout``, so a run lasts at most ``duration + 2 * timeout`` seconds.

``run_send`` is the synchronous entry point the CLI calls; ``send`` is the same as a coroutine
for callers that already run an event loop.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import io
import itertools
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from nextbest.errors import InputError

__all__ = [
    "Message",
    "SendReport",
    "StopReason",
    "ndjson_lines",
    "read_ndjson",
    "run_send",
    "send",
]

#: one Segment-spec message: a mapping, or its JSON encoding (an NDJSON line)
Message = Mapping[str, Any] | bytes

_USER_AGENT = "nextbest-sim-send/0.1"
#: the run's clock: event loop time may be coarse and cached per loop turn (uvloop: 1 ms)
_now = time.perf_counter


class StopReason(enum.StrEnum):
    """Why a run stopped taking messages."""

    DURATION = "duration"
    MAX_MESSAGES = "max_messages"
    END_OF_INPUT = "end_of_input"


class SendReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``sim send`` run did. Rates are messages (events) per second.

    ``achieved_rate`` counts messages in batches answered 2xx, over the run's time: the
    schedule window (messages due / offered rate) or, if longer, until the last response.
    Latencies are per batch (one request), from the batch's due time to its response, over
    every batch that got an HTTP response of any status; ``None`` when none did.
    ``errors_by_status`` and ``errors_by_kind`` count failed batches: by HTTP status, and by
    exception class for network failures (``ConnectError``, ``ReadTimeout``, ...).
    ``accepted`` / ``duplicates`` sum the server's counts when it reports them (nextbest does,
    Segment answers only ``success``).
    """

    target: str
    offered_rate: float
    achieved_rate: float
    duration_s: float
    batch_size: int
    concurrency: int
    stopped_by: StopReason
    messages_sent: int
    messages_ok: int
    messages_missed: int
    batches_sent: int
    batches_ok: int
    errors_by_status: dict[int, int]
    errors_by_kind: dict[str, int]
    accepted: int | None
    duplicates: int | None
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    latency_ms_p99: float | None
    latency_ms_max: float | None
    start_lag_ms_p99: float | None
    start_lag_ms_max: float | None

    @property
    def failed_batches(self) -> int:
        return sum(self.errors_by_status.values()) + sum(self.errors_by_kind.values())

    def render(self) -> str:
        """The report as a plain-text table (no colour codes)."""
        table = Table(title=f"sim send → {self.target}", show_header=False, title_justify="left")
        table.add_column("what")
        table.add_column("value", justify="right")

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:,.1f} ms"

        rows: list[tuple[str, str]] = [
            ("offered rate", f"{self.offered_rate:,.0f} events/s"),
            ("achieved rate", f"{self.achieved_rate:,.0f} events/s"),
            ("duration", f"{self.duration_s:,.2f} s (stopped by {self.stopped_by.value})"),
            ("messages sent / ok", f"{self.messages_sent:,} / {self.messages_ok:,}"),
            ("batches sent / ok", f"{self.batches_sent:,} / {self.batches_ok:,}"),
            ("batch size, connections", f"{self.batch_size:,}, {self.concurrency:,}"),
        ]
        if self.messages_missed:
            rows.append(("missed (never sent)", f"{self.messages_missed:,} messages"))
        if self.accepted is not None:
            rows.append(("accepted / duplicates", f"{self.accepted:,} / {self.duplicates or 0:,}"))
        rows += [
            ("latency p50", ms(self.latency_ms_p50)),
            ("latency p90", ms(self.latency_ms_p90)),
            ("latency p99", ms(self.latency_ms_p99)),
            ("latency max", ms(self.latency_ms_max)),
            ("start lag p99 / max", f"{ms(self.start_lag_ms_p99)} / {ms(self.start_lag_ms_max)}"),
        ]
        if not self.failed_batches:
            rows.append(("errors", "none"))
        for status, n in sorted(self.errors_by_status.items()):
            rows.append((f"errors: HTTP {status}", f"{n:,} batches"))
        for kind, n in sorted(self.errors_by_kind.items()):
            rows.append((f"errors: {kind}", f"{n:,} batches"))
        for row in rows:
            table.add_row(*row)
        out = io.StringIO()
        Console(file=out, width=80, color_system=None, force_terminal=False).print(table)
        return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


# ------------------------------------------------------------------ input
def _open(path: str | Path) -> IO[bytes]:
    return sys.stdin.buffer if str(path) == "-" else open(path, "rb")


def ndjson_lines(path: str | Path) -> Iterator[bytes]:
    """The non-blank lines of an NDJSON file (``-``: standard input), read lazily, stripped,
    not parsed: the fast path, each line goes into a batch body as it is."""
    f = _open(path)
    try:
        for line in f:
            line = line.strip()
            if line:
                yield line
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def read_ndjson(path: str | Path) -> Iterator[dict[str, Any]]:
    """The messages of an NDJSON file (``-``: standard input), one JSON object per line,
    read lazily; blank lines are skipped. A line that is not a JSON object is an InputError
    naming the file and line."""
    f = _open(path)
    try:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise InputError(f"{path}:{number}: not a JSON object")
            yield message
    finally:
        if f is not sys.stdin.buffer:
            f.close()


# ------------------------------------------------------------------ the run
def _batch_url(target: str) -> str:
    url = httpx.URL(target)
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"target must be an http(s) URL such as http://127.0.0.1:8000: {target!r}")
    text = str(url).rstrip("/")
    return text if text.endswith("/v1/batch") else text + "/v1/batch"


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` in milliseconds, or None."""
    if not values:
        return None
    rank = max(1, min(len(values), math.ceil(q * len(values) / 100)))
    return round(values[rank - 1] * 1e3, 3)


class _Run:
    """The state of one run: the input cursor, the schedule and the counters."""

    def __init__(
        self,
        messages: Iterable[Message],
        rate: float,
        duration: float,
        batch_size: int,
        max_messages: int | None,
        timeout: float,
        t0: float,
    ) -> None:
        self.input = iter(messages)
        self.rate = rate
        self.duration = duration
        self.batch_size = batch_size
        self.max_messages = max_messages
        self.t0 = t0
        self.start_deadline = t0 + duration + timeout
        self.taken = 0  # messages taken from the input (sent or missed)
        self.stopped_by: StopReason | None = None
        self.messages_sent = self.messages_ok = self.messages_missed = 0
        self.batches_sent = self.batches_ok = 0
        self.errors_by_status: Counter[int] = Counter()
        self.errors_by_kind: Counter[str] = Counter()
        self.accepted: int | None = None
        self.duplicates: int | None = None
        self.latencies: list[float] = []
        self.start_lags: list[float] = []
        self.last_done = t0

    def take(self) -> tuple[float, list[Message]] | None:
        """The next batch and its due time, or None when a bound or the input ends."""
        if self.stopped_by is not None:
            return None
        due_offset = self.taken / self.rate
        if due_offset >= self.duration:
            self.stopped_by = StopReason.DURATION
            return None
        size = self.batch_size
        if self.max_messages is not None:
            size = min(size, self.max_messages - self.taken)
            if size <= 0:
                self.stopped_by = StopReason.MAX_MESSAGES
                return None
        parts = list(itertools.islice(self.input, size))
        if not parts:
            self.stopped_by = StopReason.END_OF_INPUT
            return None
        self.taken += len(parts)
        return self.t0 + due_offset, parts

    def record_response(self, response: httpx.Response, n: int) -> None:
        if 200 <= response.status_code < 300:
            self.batches_ok += 1
            self.messages_ok += n
            self._count_accepted(response.content)
        else:
            self.errors_by_status[response.status_code] += 1

    def _count_accepted(self, content: bytes) -> None:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return
        if isinstance(body, dict):
            accepted, duplicates = body.get("accepted"), body.get("duplicates")
            if isinstance(accepted, int):
                self.accepted = (self.accepted or 0) + accepted
            if isinstance(duplicates, int):
                self.duplicates = (self.duplicates or 0) + duplicates

    def report(self, target: str, concurrency: int) -> SendReport:
        window = self.taken / self.rate
        elapsed = self.last_done - self.t0
        span = max(window, elapsed)
        lat = sorted(self.latencies)
        lag = sorted(self.start_lags)
        return SendReport(
            target=target,
            offered_rate=self.rate,
            achieved_rate=round(self.messages_ok / span, 1) if span > 0 else 0.0,
            duration_s=round(elapsed, 3),
            batch_size=self.batch_size,
            concurrency=concurrency,
            stopped_by=self.stopped_by or StopReason.END_OF_INPUT,
            messages_sent=self.messages_sent,
            messages_ok=self.messages_ok,
            messages_missed=self.messages_missed,
            batches_sent=self.batches_sent,
            batches_ok=self.batches_ok,
            errors_by_status=dict(sorted(self.errors_by_status.items())),
            errors_by_kind=dict(sorted(self.errors_by_kind.items())),
            accepted=self.accepted,
            duplicates=self.duplicates,
            latency_ms_p50=_percentile(lat, 50),
            latency_ms_p90=_percentile(lat, 90),
            latency_ms_p99=_percentile(lat, 99),
            latency_ms_max=_percentile(lat, 100),
            start_lag_ms_p99=_percentile(lag, 99),
            start_lag_ms_max=_percentile(lag, 100),
        )


def _body(parts: list[Message]) -> bytes:
    dumps = orjson.dumps
    encoded = b",".join(p if isinstance(p, bytes) else dumps(p) for p in parts)
    return b'{"batch":[' + encoded + b"]}"


def _planned(rate: float, duration: float, max_messages: int | None) -> int:
    planned = math.ceil(rate * duration)
    return planned if max_messages is None else min(planned, max_messages)


def _check(rate: float, duration: float, batch_size: int, concurrency: int, timeout: float) -> None:
    for name, value, unit in (
        ("rate", rate, "events/s"),
        ("duration", duration, "seconds"),
        ("timeout", timeout, "seconds"),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise InputError(f"{name} must be a positive number of {unit}: {value}")
    if batch_size < 1 or concurrency < 1:
        raise InputError(f"batch size and concurrency must be >= 1: {batch_size}, {concurrency}")


async def send(
    target: str,
    write_key: str,
    rate: float,
    duration: float,
    messages: Iterable[Message],
    *,
    batch_size: int = 100,
    max_messages: int | None = None,
    concurrency: int = 8,
    progress: bool = True,
    timeout: float = 10.0,
) -> SendReport:
    """Send ``messages`` to ``target`` on an open-loop schedule; see ``run_send``."""
    _check(rate, duration, batch_size, concurrency, timeout)
    if max_messages is not None and max_messages < 0:
        raise InputError(f"max messages must be >= 0: {max_messages}")
    url = _batch_url(target)
    token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
    headers = {
        "authorization": f"Basic {token}",
        "content-type": "application/json",
        "user-agent": _USER_AGENT,
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    console = Console(stderr=True)
    show = progress and console.is_terminal
    bar = Progress(
        TextColumn("sim send"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("messages · {task.fields[errors]} failed batches"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    # trust_env=False: measure the target itself, never through an environment proxy or with
    # credentials from ~/.netrc
    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=httpx.Timeout(timeout), trust_env=False
    ) as client:
        run = _Run(messages, rate, duration, batch_size, max_messages, timeout, _now())
        with bar:
            task = bar.add_task(
                "send", total=_planned(rate, duration, max_messages) or None, errors=0
            )

            async def worker() -> None:
                while (batch := run.take()) is not None:
                    due, parts = batch
                    if _now() > run.start_deadline:
                        run.messages_missed += len(parts)
                        continue
                    body = _body(parts)
                    while (wait := due - _now()) > 0:  # timers may fire early (uvloop: ms)
                        await asyncio.sleep(wait)
                    started = _now()
                    if started > run.start_deadline:
                        run.messages_missed += len(parts)
                        continue
                    await _post(client, url, body, due, started, len(parts), run)
                    if show:
                        _advance(bar, task, run, len(parts))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            if show:
                bar.update(task, total=run.taken, completed=run.taken)
    return run.report(target, concurrency)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    due: float,
    started: float,
    n: int,
    run: _Run,
) -> None:
    run.batches_sent += 1
    run.messages_sent += n
    run.start_lags.append(started - due)
    try:
        response = await client.post(url, content=body)
    except httpx.TransportError as exc:  # network trouble is a result, not a crash
        run.errors_by_kind[type(exc).__name__] += 1
    else:
        run.latencies.append(_now() - due)
        run.record_response(response, n)
    run.last_done = max(run.last_done, _now())


def _advance(bar: Progress, task: TaskID, run: _Run, n: int) -> None:
    errors = sum(run.errors_by_status.values()) + sum(run.errors_by_kind.values())
    bar.update(task, advance=n, errors=errors)


def run_send(
    target: str,
    write_key: str,
    rate: float,
    duration: float,
    messages: Iterable[Message],
    *,
    batch_size: int = 100,
    max_messages: int | None = None,
    concurrency: int = 8,
    progress: bool = True,
    timeout: float = 10.0,
) -> SendReport:
    """Post ``messages`` to ``target``'s ``/v1/batch`` at ``rate`` events/s, open loop, and
    report what happened. Blocks until the run ends; never raises for HTTP or network errors
    (they are counted in the report), only for bad arguments (InputError).

    target
        the server's base URL (``http://127.0.0.1:8000``) or its full ``/v1/batch`` URL.
    write_key
        sent as the HTTP Basic user name with an empty password.
    rate, duration
        offered events per second, and for how many seconds batches fall due.
    messages
        Segment-spec messages: dicts, or JSON-encoded bytes such as ``ndjson_lines(path)``
        (sent as they are, no re-encoding); read lazily, at most ``max_messages`` of them.
    batch_size
        messages per ``/v1/batch`` body (nextbest takes up to 2,000).
    concurrency
        connections in the keep-alive pool, and so requests in flight at most.
    progress
        show a progress bar on standard error (only if it is a terminal).
    timeout
        seconds for each request (connect, write, read); also how long after ``duration``
        a late batch may still start.
    """
    coroutine = send(
        target,
        write_key,
        rate,
        duration,
        messages,
        batch_size=batch_size,
        max_messages=max_messages,
        concurrency=concurrency,
        progress=progress,
        timeout=timeout,
    )
    try:
        import uvloop  # installed with uvicorn[standard] (not on Windows)
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
