"""NATS JetStream behind the bus port (nats-py).

``NatsBus("nats://127.0.0.1:4222/NEXTBEST", partitions=16)``: the URL's path names the stream
(default ``NEXTBEST``). The stream is made on first use, file storage, with subjects
``<stream>.events.<partition>`` and ``<stream>.learn`` (the learning feed: added to a stream
made before it had one); its description records the partition count, and a stream made with
another count is refused (ConfigError): a customer's partition must never move. A message's
kind travels in the header ``Nextbest-Kind``.

- **Publish**: every message with header ``Nats-Msg-Id`` = its messageId, so a client's retry
  within the stream's duplicate window (``duplicate_window``, default 2 minutes) is stored
  once (the PubAck says ``duplicate``); all of a call's messages in flight at once, the call
  returning when every PubAck came back (JetStream has written them: acknowledged).
- **Consume**: a durable push consumer per name, explicit acks, ``ack_wait`` before an
  unacknowledged delivery is sent again, at most ``max_ack_pending`` unacknowledged at once
  (the flow control: a stalled fold stops deliveries, the stream keeps the rest). An ack
  is sent without waiting for the server's answer (one lost is one redelivery).
  ``consume(name, after)`` recreates the consumer from stream sequence ``after + 1``: the
  folded position its owner saved with its state is the real cursor, so a restart resumes
  exactly there, without waiting for ``ack_wait``. A consumer of one partition (or of the
  learning feed) checks that no delivery went missing on the way (the consumer sequence
  JetStream numbers each delivery with, redeliveries included, has no gap); one that did
  (a reconnection drops what was in flight) makes ``fetch`` raise StoreUnavailable until
  the consumer is started over.

nats-py is asynchronous: the adapter runs its own event loop in a daemon thread and the port's
methods wait on it (at most ``timeout`` seconds each). nats-py errors never leave this module:
no server, a timeout, a closed connection or JetStream not answering are StoreUnavailable;
anything else StoreError; a message names host:port, never a password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RawStreamMsg,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from nextbest.bus.port import LEARNING, BusMessage, Delivery, Published
from nextbest.errors import ConfigError, StoreError, StoreUnavailable

__all__ = ["DEFAULT_STREAM", "NatsBus"]

log = logging.getLogger("nextbest.bus")

DEFAULT_STREAM = "NEXTBEST"
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PARTITIONS = re.compile(r"(\d+) partitions")
_MSG_ID = "Nats-Msg-Id"
_KIND = "Nextbest-Kind"
#: JetStream's error codes for a message sequence it does not hold (deleted, or never)
_NO_MESSAGE = (10037, 10043, 10057)

T = TypeVar("T")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class _Subscription:
    """One consumer's deliveries as the loop thread hands them over."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        #: the latest delivery's message per stream sequence (what an ack answers)
        self.messages: dict[int, Msg] = {}
        self.lock = threading.Lock()
        self.sub: Any = None
        #: the last consumer sequence seen (every delivery is numbered, redeliveries too);
        #: None: not checked (a consumer of every partition checks stream order itself)
        self.last_delivery: int | None = None
        #: a delivery went missing: ``fetch`` refuses until the consumer starts over
        self.gap: str | None = None


class NatsBus:
    """The bus port on a NATS server with JetStream. Connects, and makes or checks the stream,
    at once: a wrong URL or an absent server is a clear error at start."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int = 16,
        ack_wait: float = 10.0,
        duplicate_window: float = 120.0,
        max_ack_pending: int = 20_000,
        timeout: float = 2.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls"):
            raise ConfigError(f"not a NATS URL (nats://host:port/STREAM): {_redacted(url)}")
        stream = parts.path.strip("/") or DEFAULT_STREAM
        if not _STREAM_NAME.match(stream):
            raise ConfigError(f"a JetStream stream name is letters, digits, - and _: {stream!r}")
        if partitions < 1:
            raise ConfigError("the bus has at least one partition")
        self.stream = stream
        self.partitions = partitions
        self.where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 4222}"
        self.ack_wait = ack_wait
        self.duplicate_window = duplicate_window
        self.max_ack_pending = max_ack_pending
        self.timeout = timeout
        self._server = urlunsplit(parts._replace(path="", query="", fragment=""))
        self._password = parts.password or ""
        self._subjects = f"{stream}.events.*"
        self._learning = f"{stream}.learn"
        self._subs: dict[str, _Subscription] = {}
        #: set on every delivery to any consumer (``fetch_any`` waits on it)
        self._arrived = threading.Event()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nextbest-bus", daemon=True
        )
        self._thread.start()
        try:
            self._run("connect", self._connect(), self.timeout * 3)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the port
    def publish(self, messages: Sequence[BusMessage]) -> list[Published]:
        if not messages:
            return []
        for m in messages:
            if not 0 <= m.partition < self.partitions and m.partition != LEARNING:
                raise StoreError(f"no partition {m.partition} (the bus has {self.partitions})")
        return self._run("publish", self._publish(messages), self.timeout + 1.0)

    def consume(self, consumer: str, after: int, partition: int | None = None) -> None:
        known = partition is None or partition == LEARNING or 0 <= partition < self.partitions
        if not known:
            raise StoreError(f"no partition {partition} (the bus has {self.partitions})")
        self._run("consume", self._consume(consumer, after, partition), self.timeout * 3)

    def fetch(self, consumer: str, max_messages: int, wait: float) -> list[Delivery]:
        sub = self._subs.get(consumer)
        if sub is None:
            raise StoreError(f"no consumer {consumer!r}: call consume first")
        if sub.gap is not None:
            raise StoreUnavailable(f"NATS at {self.where}: consumer {consumer!r}: {sub.gap}")
        try:
            first = sub.queue.get(timeout=wait) if wait > 0 else sub.queue.get_nowait()
        except queue.Empty:
            return []
        out = [first]
        while len(out) < max_messages:
            try:
                out.append(sub.queue.get_nowait())
            except queue.Empty:
                break
        return out

    def fetch_any(self, consumers: Sequence[str], max_messages: int, wait: float) -> list[Delivery]:
        subs = []
        for name in consumers:
            sub = self._subs.get(name)
            if sub is None:
                raise StoreError(f"no consumer {name!r}: call consume first")
            subs.append((name, sub))
        deadline = time.monotonic() + wait
        while True:
            self._arrived.clear()  # before looking: a delivery meanwhile sets it again
            out: list[Delivery] = []
            share = max(1, max_messages // max(1, len(subs)))  # no partition starves the rest
            for limit in (share, max_messages):
                for name, sub in subs:
                    if sub.gap is not None:
                        raise StoreUnavailable(
                            f"NATS at {self.where}: consumer {name!r}: {sub.gap}"
                        )
                    taken = 0
                    while len(out) < max_messages and taken < limit:
                        try:
                            out.append(sub.queue.get_nowait())
                        except queue.Empty:
                            break
                        taken += 1
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            self._arrived.wait(left)

    def ack(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        sub = self._subs.get(consumer)
        if sub is None:
            raise StoreError(f"no consumer {consumer!r}: call consume first")
        with sub.lock:
            msgs = [m for m in (sub.messages.pop(d.seq, None) for d in deliveries) if m]
        if msgs and not self._loop.is_closed():
            # not waited for (``_ack``): the loop thread sends them while the fold goes on
            future = asyncio.run_coroutine_threadsafe(self._ack(msgs), self._loop)
            future.add_done_callback(self._ack_done)

    def _ack_done(self, future: concurrent.futures.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            text = self._scrub(str(future.exception()))
            log.warning("NATS at %s: acks not sent (redelivered later): %s", self.where, text)

    def pending(self, consumer: str) -> int:
        return self._run("consumer info", self._pending(consumer), self.timeout)

    def last_seq(self) -> int:
        return self._run("stream info", self._last_seq(), self.timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run("close", self._shutdown(), self.timeout * 2)
        finally:
            self._stop_loop()

    # ------------------------------------------------------------------ erasure
    def message_ids(self, seqs: Collection[int]) -> dict[int, str]:
        """``ErasableStream.message_ids``: the messageIds of the messages still held at
        ``seqs`` (a deleted or absent one left out)."""
        if not seqs:
            return {}
        return self._run("get messages", self._message_ids(sorted(set(seqs))), self.timeout * 3)

    def erase_messages(self, seqs: Collection[int]) -> int:
        """``ErasableStream.erase_messages``: JetStream's message delete, with its default
        secure erase (the stored bytes overwritten with random data; ``no_erase`` unset);
        one already gone is passed over. How many were deleted."""
        if not seqs:
            return 0
        return self._run("delete messages", self._erase(sorted(set(seqs))), self.timeout * 3)

    def purge_learning(self, upto: int) -> None:
        """``ErasableStream.purge_learning``: the learning feed's messages up to stream
        sequence ``upto`` removed (a purge: marked removed, not overwritten)."""
        if upto > 0:
            self._run("purge learning feed", self._purge_learning(upto), self.timeout)

    def messages(self) -> list[tuple[int, str, bytes]]:
        """Every message the stream holds: (stream sequence, messageId, body), in order
        (for inspection: tests, an operator checking an erasure)."""
        return self._run("read stream", self._messages(), self.timeout * 10)

    def delete_stream(self) -> None:
        """Delete the stream and its consumers (tests, and an operator starting over)."""
        self._run("delete stream", self._delete_stream(), self.timeout)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # ------------------------------------------------------------------ on the loop
    async def _connect(self) -> None:
        async def quiet(exc: Exception) -> None:  # nats-py reconnects by itself
            log.debug("NATS at %s: %s", self.where, self._scrub(str(exc) or type(exc).__name__))

        self._nc = Client()
        await self._nc.connect(
            self._server,
            connect_timeout=max(1, math.ceil(self.timeout)),
            reconnect_time_wait=0.25,  # type: ignore[arg-type]  # seconds, a float
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            error_cb=quiet,
            name="nextbest",
        )
        self._js = self._nc.jetstream(timeout=self.timeout)
        description = f"nextbest accepted events, {self.partitions} partitions"
        try:
            info = await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(
                StreamConfig(
                    name=self.stream,
                    description=description,
                    subjects=[self._subjects, self._learning],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    duplicate_window=self.duplicate_window,
                )
            )
            return
        found = _PARTITIONS.search(info.config.description or "")
        if found is None or int(found.group(1)) != self.partitions:
            raise ConfigError(
                f"JetStream stream {self.stream} at {self.where} was made with "
                f"{found.group(1) if found else 'an unknown number of'} partitions, not "
                f"{self.partitions}: a customer's partition must never move (NEXTBEST_BUS_"
                "PARTITIONS, or another stream name in NEXTBEST_BUS)"
            )
        subjects = list(info.config.subjects or [])
        if self._learning not in subjects:  # made before the learning feed had a subject
            config = dataclasses.replace(info.config, subjects=[*subjects, self._learning])
            await self._js.update_stream(config)

    async def _publish(self, messages: Sequence[BusMessage]) -> list[Published]:
        js = self._jetstream()
        acks = await asyncio.gather(
            *(
                js.publish(
                    self._learning
                    if m.partition == LEARNING
                    else f"{self.stream}.events.{m.partition}",
                    m.body,
                    timeout=self.timeout,
                    stream=self.stream,
                    headers={_MSG_ID: m.message_id, _KIND: m.kind}
                    if m.kind
                    else {_MSG_ID: m.message_id},
                )
                for m in messages
            )
        )
        return [Published(a.seq, bool(a.duplicate)) for a in acks]

    async def _consume(self, consumer: str, after: int, partition: int | None) -> None:
        js = self._jetstream()
        old = self._subs.pop(consumer, None)
        if old is not None and old.sub is not None:
            await old.sub.unsubscribe()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self.stream, consumer)
        sub = self._subs[consumer] = _Subscription()
        if partition is None:
            subject = self._subjects
        else:
            subject = (
                self._learning if partition == LEARNING else f"{self.stream}.events.{partition}"
            )
            sub.last_delivery = 0
        start = (
            {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after + 1}
            if after > 0
            else {"deliver_policy": DeliverPolicy.ALL}
        )
        config = ConsumerConfig(
            durable_name=consumer,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            filter_subject=subject,
            **start,
        )
        prefix = len(f"{self.stream}.events.")

        async def delivered(msg: Msg) -> None:
            meta = msg.metadata
            seq = meta.sequence.stream
            if sub.last_delivery is not None:
                number = meta.sequence.consumer
                if number != sub.last_delivery + 1 and sub.gap is None:
                    sub.gap = (
                        f"delivery {sub.last_delivery + 1} of {number} went missing: "
                        "start the consumer over from the last one processed"
                    )
                sub.last_delivery = number
            with sub.lock:
                sub.messages[seq] = msg
            headers = msg.headers or {}
            message_id = headers.get(_MSG_ID, "")
            where = LEARNING if msg.subject == self._learning else int(msg.subject[prefix:])
            sub.queue.put(
                Delivery(
                    seq, where, message_id, msg.data, meta.num_delivered, headers.get(_KIND, "")
                )
            )
            self._arrived.set()

        sub.sub = await js.subscribe(
            subject,
            durable=consumer,
            stream=self.stream,
            config=config,
            manual_ack=True,
            cb=delivered,
        )

    async def _ack(self, msgs: list[Msg]) -> None:
        """Queued on the connection, not waited for: an ack the server never gets means a
        redelivery after ``ack_wait``, which the fold skips by its saved position; waiting
        for the server's answer would hold the next fold step for a round trip."""
        for m in msgs:
            await m.ack()

    async def _pending(self, consumer: str) -> int:
        info = await self._jetstream().consumer_info(self.stream, consumer)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def _last_seq(self) -> int:
        info = await self._jetstream().stream_info(self.stream)
        return int(info.state.last_seq or 0)

    async def _get(self, seq: int) -> RawStreamMsg | None:
        try:
            return await self._jetstream().get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None

    async def _message_ids(self, seqs: list[int]) -> dict[int, str]:
        got = await asyncio.gather(*(self._get(seq) for seq in seqs))
        return {
            seq: (m.headers or {}).get(_MSG_ID, "")
            for seq, m in zip(seqs, got, strict=True)
            if m is not None
        }

    async def _erase_one(self, seq: int) -> bool:
        try:
            return bool(await self._jetstream().delete_msg(self.stream, seq))
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as exc:
            if exc.err_code in _NO_MESSAGE:
                return False
            raise

    async def _erase(self, seqs: list[int]) -> int:
        return sum(await asyncio.gather(*(self._erase_one(seq) for seq in seqs)))

    async def _purge_learning(self, upto: int) -> None:
        await self._jetstream().purge_stream(self.stream, seq=upto + 1, subject=self._learning)

    async def _messages(self) -> list[tuple[int, str, bytes]]:
        info = await self._jetstream().stream_info(self.stream)
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        out: list[tuple[int, str, bytes]] = []
        for start in range(max(first, 1), last + 1, 256):
            seqs = range(start, min(last, start + 255) + 1)
            got = await asyncio.gather(*(self._get(seq) for seq in seqs))
            for m in got:
                if m is not None and m.seq is not None:
                    headers = m.headers or {}
                    out.append((m.seq, headers.get(_MSG_ID, ""), m.data or b""))
        return out

    async def _delete_stream(self) -> None:
        for sub in self._subs.values():
            if sub.sub is not None:
                await sub.sub.unsubscribe()
        self._subs.clear()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jetstream().delete_stream(self.stream)

    async def _shutdown(self) -> None:
        """Close the connection, then end every task still on the loop (reconnects, reads)."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        here = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not here]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise StoreUnavailable(f"NATS at {self.where}: not connected")
        return self._js

    # ------------------------------------------------------------------ the thread hop
    def _run(self, action: str, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise StoreUnavailable(
                f"NATS at {self.where}: {action}: no answer within {timeout:g} s"
            ) from exc
        except (
            TimeoutError,
            nats.errors.TimeoutError,
            nats.errors.NoServersError,
            nats.errors.ConnectionClosedError,
            nats.errors.StaleConnectionError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.ServiceUnavailableError,
            OSError,
        ) as exc:
            raise StoreUnavailable(self._message(action, exc)) from exc
        except nats.errors.Error as exc:
            raise StoreError(self._message(action, exc)) from exc

    def _message(self, action: str, exc: BaseException) -> str:
        return f"NATS at {self.where}: {action}: {self._scrub(str(exc) or type(exc).__name__)}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
