"""The scaled deployment's figures (issue #17, point 6): events/s and decisions/s with 1 and 2
API workers, CPU per event and per decision summed over every process (API workers, fold
worker, redis-server, nats-server, postgres; /proc/<pid>/stat before and after), PostgreSQL
event rows/s (the fold's batches, from its /metrics), freshness (an event acknowledged by one
API worker, then visible in a profile read on another; and the same probes' profile as seen
in Redis directly: the fold's part), read-your-writes on another worker (an event
acknowledged by worker 1, then a decision for the same id on worker 2 at once: how long it
takes, and how often it waited for the fold), model staleness (a click acknowledged by
worker 1 until worker 2's model copy has learned it), the API workers' own metrics, bytes
per profile in Redis.

    PYTHONPATH=src .venv/bin/python bench/scaled.py [--seconds 5] [--out bench/results/scaled.json]
        [--folds 2] [--cache 2000]

``--folds N``: N fold workers owning the 16 partitions in equal shares (``serve --role fold
--partitions``, profiles read from Redis on demand); without it, the one fold worker of
``serve --role fold`` (every profile in memory). ``--cache``: each partitioned worker's
profile cache (entries; the load's 5,000 customers need ~5,000), to measure the reads from
Redis when the working set does not fit.

Needs the local PostgreSQL (database test), Redis and NATS JetStream; uses a schema, a Redis
database (10) and a stream of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.test_scaled_processes import Worker  # noqa: E402
from tests.nats import delete_stream  # noqa: E402

from nextbest.profile.book import PROFILE_ROW  # noqa: E402
from nextbest.store.redis import RedisState  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/10"
SERVER = ("dev-server-key", "")
MORTGAGE = "https://bank.example/mortgages/rates"
TICK = os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def event(n: int, user: str, prefix: str = "e-") -> dict[str, object]:
    return {
        "type": "page",
        "messageId": f"{prefix}{uuid.uuid4().hex}",
        "userId": user,
        "properties": {"url": MORTGAGE},
        "context": {"n": n},
    }


def load(
    urls: list[str],
    seconds: float,
    clients: int,
    kind: str,
    rate: float = 0.0,
    until: threading.Event | None = None,
) -> int:
    """``clients`` threads sending for ``seconds`` (or until ``until`` is set): batches of 20
    events, or decisions; as fast as answered, or (``rate`` > 0) that many events or
    decisions a second in all."""
    done = [0] * clients
    stop = time.monotonic() + seconds
    every = (20 if kind == "events" else 1) * clients / rate if rate > 0 else 0.0

    def run(c: int) -> None:
        with httpx.Client(auth=SERVER, timeout=10) as http:
            n = 0
            due = time.monotonic()
            while time.monotonic() < stop and not (until is not None and until.is_set()):
                if every:
                    due += every
                    time.sleep(max(0.0, due - time.monotonic()))
                url = urls[(c + n) % len(urls)]
                user = f"u{(c * 997 + n) % 5000}"
                if kind == "events":
                    body = {"batch": [event(n, user) for _ in range(20)]}
                    r = http.post(f"{url}/v1/batch", json=body)
                    done[c] += 20 if r.status_code == 200 else 0
                else:
                    ask = {"userId": user, "placement": "home_feed"}
                    r = http.post(f"{url}/v1/decide", json=ask)
                    done[c] += 1 if r.status_code == 200 else 0
                n += 1

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


class Background:
    """Events sent through ``url`` at ``rate`` a second by 2 clients while the block runs;
    ``rate`` afterwards: the rate achieved."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.target = url, rate
        self.rate = 0.0
        self._stop = threading.Event()
        self._sent: list[int] = []
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self._sent.append(load([self.url], 600.0, 2, "events", self.target, self._stop))

    def __enter__(self) -> Background:
        self._started = time.perf_counter()
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.rate = self._sent[0] / (time.perf_counter() - self._started)


class StateWatch:
    """Beside a freshness probe's reads through the API worker: its profile read from Redis
    directly every millisecond, so the time until the fold's save made it visible shows
    apart from what a read through the API worker adds (HTTP, the read's audit record)."""

    def __init__(self) -> None:
        self.state = RedisState(REDIS)
        self.user: str | None = None
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            user = self.user
            if user is None or user in self.seen:
                continue
            if self.state.read_rows([(PROFILE_ROW, user)])[0] is not None:
                self.seen[user] = time.perf_counter()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.state.close()


def freshness(
    writer: str,
    reader: str,
    probes: int,
    traced: list[dict[str, object]] | None = None,
    in_state: list[float] | None = None,
) -> list[float]:
    """Seconds from an event's 200 on ``writer`` until ``reader`` shows it in the profile
    (``in_state``: until its profile was in Redis, read directly, 0 when before the 200;
    ``traced``: each probe's messageId, wall-clock post, 200, last read missing it and
    first read showing it, for ``--trace``; its messageId starts ``fp-``)."""
    out = []
    watch = StateWatch() if in_state is not None else None
    with httpx.Client(auth=SERVER, timeout=10) as http:
        for n in range(probes):
            user = f"probe-{uuid.uuid4().hex[:8]}"
            if watch is not None:
                watch.user = user
            sent = event(n, user, "fp-")
            posted = time.time()
            r = http.post(f"{writer}/v1/batch", json={"batch": [sent]})
            assert r.status_code == 200, r.text
            acked = time.perf_counter()
            wall_acked = time.time()
            reads, missed = 0, 0.0
            while True:
                asked = time.time()
                got = http.get(f"{reader}/v1/profiles/{user}")
                reads += 1
                if got.status_code == 200:
                    out.append(time.perf_counter() - acked)
                    break
                missed = asked
                if time.perf_counter() - acked > 5:
                    out.append(5.0)
                    break
            if traced is not None:
                traced.append(
                    {
                        "id": sent["messageId"],
                        "user": user,
                        "posted": posted,
                        "acked": wall_acked,
                        "last_miss_asked": missed,
                        "seen_asked": asked,
                        "seen": time.time(),
                        "reads": reads,
                        "ms": 1000 * out[-1],
                    }
                )
            if watch is not None and in_state is not None:
                watch.user = None
                seen = watch.seen.get(user)
                in_state.append(max(0.0, seen - acked) if seen is not None else out[-1])
            time.sleep(0.02)
    if watch is not None:
        watch.close()
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary_ms(xs: list[float]) -> dict[str, float]:
    return {
        "p50": 1000 * statistics.median(xs),
        "p99": 1000 * quantile(xs, 0.99),
        "max": 1000 * max(xs),
        "probes": len(xs),
    }


def metrics(url: str) -> dict[str, float]:
    """A worker's /metrics as name{labels} -> value."""
    text = httpx.get(f"{url}/metrics", auth=("dev-admin-key", ""), timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def bucket_quantiles(
    before: dict[str, float], after: dict[str, float], name: str
) -> dict[str, float]:
    """p50, p90, p99 of a histogram's observations between two scrapes, as the upper bound
    of the bucket each falls in (ms)."""
    prefix = name + '_bucket{le="'
    bounds = sorted(
        (float(k[len(prefix) : -2]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix)
    )
    total = bounds[-1][1] if bounds else 0.0
    out: dict[str, float] = {"events": total}
    for q in (0.5, 0.9, 0.99):
        out[f"p{round(q * 100)}"] = next(
            (1000 * le for le, n in bounds if n >= q * total), float("inf")
        )
    return out


def read_your_writes(writer: str, reader: str, probes: int) -> list[float]:
    """Seconds from an event's 200 on ``writer`` to a decision's 200 for the same id on
    ``reader`` (which waits, bounded, until the fold reached the event)."""
    out = []
    with httpx.Client(auth=SERVER, timeout=10) as http:
        for n in range(probes):
            user = f"ryw-{uuid.uuid4().hex[:8]}"
            r = http.post(f"{writer}/v1/batch", json={"batch": [event(n, user)]})
            assert r.status_code == 200, r.text
            acked = time.perf_counter()
            d = http.post(f"{reader}/v1/decide", json={"userId": user, "placement": "home_feed"})
            assert d.status_code == 200, d.text
            out.append(time.perf_counter() - acked)
            time.sleep(0.02)
    return out


def model_staleness(writer: str, reader: str, probes: int) -> list[float]:
    """Seconds from a click's 200 on ``writer`` until ``reader``'s model copy learned it
    (``nextbest_learner_examples`` on its /metrics went up)."""
    out = []
    examples = "nextbest_learner_examples"
    with httpx.Client(auth=SERVER, timeout=10) as http:
        for _ in range(probes):
            user = f"click-{uuid.uuid4().hex[:8]}"
            # a customer with a history (feedback of a stranger teaches nothing: learn.trust);
            # the decision reads its own write, so the page view is folded before the click
            r = http.post(f"{writer}/v1/batch", json={"batch": [event(0, user)]})
            assert r.status_code == 200, r.text
            d = http.post(f"{writer}/v1/decide", json={"userId": user, "placement": "app_home"})
            item = d.json()["items"][0]
            props = {
                "decision_id": d.json()["decision_id"],
                "promotion_id": item["offer_id"],
                "position": item["position"],
            }
            before = metrics(reader).get(examples, 0.0)
            batch = [
                {"type": "track", "event": name, "userId": user, "properties": props}
                for name in ("Promotion Viewed", "Promotion Clicked")
            ]
            r = http.post(f"{writer}/v1/batch", json={"batch": batch})
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == 2, r.text
            acked = time.perf_counter()
            while metrics(reader).get(examples, 0.0) <= before:
                if time.perf_counter() - acked > 10:
                    break
                time.sleep(0.01)
            out.append(time.perf_counter() - acked)
    return out


def summed(folds: list[Worker]) -> dict[str, float]:
    """The fold workers' metrics, added up (counters and histograms sum across workers)."""
    out: dict[str, float] = {}
    for fold in folds:
        for k, v in metrics(fold.url).items():
            out[k] = out.get(k, 0.0) + v
    return out


def phase(
    workers: list[Worker], folds: list[Worker], seconds: float, kind: str, clients: int
) -> dict:
    pids = [w.proc.pid for w in [*workers, *folds] if w.proc]
    services = pids_named("redis-server") + pids_named("nats-server") + pids_named("postgres")
    folded = 'nextbest_fold_events_total{outcome="folded"}'
    fm0 = summed(folds)
    before = (cpu_seconds(pids), cpu_seconds(services))
    started = time.perf_counter()
    n = load([w.url for w in workers], seconds, clients, kind)
    elapsed = time.perf_counter() - started
    after = (cpu_seconds(pids), cpu_seconds(services))
    fm1 = summed(folds)
    ours, theirs = after[0] - before[0], after[1] - before[1]
    out = {
        "ops": n,
        "per_second": n / elapsed,
        "cpu_ms_per_op_nextbest": 1000 * ours / max(n, 1),
        "cpu_ms_per_op_services": 1000 * theirs / max(n, 1),
        "cpu_ms_per_op_total": 1000 * (ours + theirs) / max(n, 1),
    }
    if kind == "events":
        rows = fm1.get(folded, 0) - fm0.get(folded, 0)
        batches = (
            fm1["nextbest_postgres_batch_seconds_count"]
            - fm0["nextbest_postgres_batch_seconds_count"]
        )
        busy = (
            fm1["nextbest_postgres_batch_seconds_sum"] - fm0["nextbest_postgres_batch_seconds_sum"]
        )
        out["postgres"] = {
            "rows": rows,
            "rows_per_second_wall": rows / elapsed,
            "batches": batches,
            "rows_per_batch": rows / max(batches, 1),
            "ms_per_batch": 1000 * busy / max(batches, 1),
            # rows per second of the event log's busy time (before the write-behind log: its
            # append and the fold together; now its commits alone, off the visibility path)
            "rows_per_busy_second": rows / max(busy, 1e-9),
        }
        fold_name = "nextbest_fold_batch_seconds"  # the fold alone (since the write-behind log)
        if fold_name + "_count" in fm1:
            folds = fm1[fold_name + "_count"] - fm0.get(fold_name + "_count", 0.0)
            fold_busy = fm1[fold_name + "_sum"] - fm0.get(fold_name + "_sum", 0.0)
            out["fold"] = {
                "batches": folds,
                "rows_per_batch": rows / max(folds, 1),
                "ms_per_batch": 1000 * fold_busy / max(folds, 1),
                "rows_per_busy_second": rows / max(fold_busy, 1e-9),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--fresh-rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[500.0, 1000.0, 2000.0],
        help="background events/s while freshness and read-your-writes are probed",
    )
    parser.add_argument("--out", default="bench/results/scaled.json")
    parser.add_argument("--folds", type=int, default=0, help="partitioned fold workers")
    parser.add_argument("--cache", type=int, default=0, help="their profile cache (entries)")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument(
        "--trace",
        default="",
        help="a directory: the workers trace each freshness probe's stages there "
        "(bench/fold_trace), the probes are kept in the results; bench/fold_trace/report.py",
    )
    args = parser.parse_args()
    schema = f"bench_scaled_{uuid.uuid4().hex[:8]}"
    stream = f"NBBENCH-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    RedisState(REDIS).client.flushdb()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NEXTBEST_CATALOG": str(ROOT / "examples" / "bank"),
        "NEXTBEST_DATA": f"{PG}?options=-csearch_path%3D{schema}",
        "NEXTBEST_PROFILES": REDIS,
        "NEXTBEST_BUS": f"nats://127.0.0.1:4222/{stream}",
        "NEXTBEST_BUS_PARTITIONS": str(args.partitions),
    }
    if args.cache:
        env["NEXTBEST_FOLD_CACHE"] = str(args.cache)
    if args.trace:
        Path(args.trace).mkdir(parents=True, exist_ok=True)
        env["NEXTBEST_TRACE"] = str(Path(args.trace).resolve())
        env["PYTHONPATH"] = f"{ROOT / 'bench' / 'fold_trace'}:{env['PYTHONPATH']}"
    logs = Path("/tmp") / schema
    logs.mkdir()
    if args.folds:
        share = args.partitions // args.folds
        spans = [
            f"{i * share}-{args.partitions - 1 if i == args.folds - 1 else (i + 1) * share - 1}"
            for i in range(args.folds)
        ]
        folds = [
            Worker("fold", {**env, "NEXTBEST_FOLD_PARTITIONS": span}, logs / f"fold{i}.log")
            for i, span in enumerate(spans)
        ]
    else:
        folds = [Worker("fold", env, logs / "fold.log")]
    for f in folds:
        f.start()
    apis = [Worker("api", env, logs / f"api{i}.log").start() for i in (1, 2)]
    results: dict[str, object] = {
        "load": os.getloadavg(),
        "fold_workers": args.folds or "one (every partition, every profile in memory)",
        "fold_cache": args.cache or "default (100,000 entries)",
    }
    try:
        load([apis[0].url], 2.0, args.clients, "events")  # warm up
        for n in (1, 2):
            used = apis[:n]
            for kind in ("events", "decisions"):
                results[f"{kind}_{n}_api"] = phase(used, folds, args.seconds, kind, args.clients)
        # under load: events keep coming through worker 1 (at a fixed rate) while probing
        # 1 -> 2; the fold's capacity is the events phase's rows_per_busy_second
        for i, rate in enumerate(args.fresh_rates):
            out: dict[str, object] = {}
            traced: list[dict[str, object]] = []
            in_state: list[float] = []
            for name, probe in (("freshness", freshness), ("read_your_writes", read_your_writes)):
                before = summed(folds)
                with Background(apis[0].url, rate) as background:
                    if probe is freshness:
                        got = freshness(apis[0].url, apis[1].url, 100, traced, in_state)
                    else:
                        got = probe(apis[0].url, apis[1].url, 100)
                out[name + "_ms"] = summary_ms(got)
                if probe is freshness:  # the same probes, seen in Redis directly
                    out["freshness_in_redis_ms"] = summary_ms(in_state)
                out[name + "_background_events_per_second"] = background.rate
                out[name + "_load"] = os.getloadavg()[0]
                if name == "freshness":  # the fold's own figure, over every event meanwhile
                    out["fold_visible_ms_at_most"] = bucket_quantiles(
                        before, summed(folds), "nextbest_fold_visible_seconds"
                    )
            if args.trace:
                out["freshness_probes"] = traced
            again = args.fresh_rates[:i].count(rate)  # a rate probed again: a key of its own
            results[f"under_{rate:g}_events_per_second{f'_{again + 1}' if again else ''}"] = out
        results["model_staleness_ms"] = summary_ms(model_staleness(apis[0].url, apis[1].url, 10))
        api_metrics = {}
        for i, w in enumerate(apis, 1):
            m = metrics(w.url)
            api_metrics[f"api{i}"] = {
                k: v
                for k, v in m.items()
                if k.startswith(
                    (
                        "nextbest_read_your_writes_waits_total",
                        "nextbest_read_your_writes_wait_seconds_sum",
                        "nextbest_write_mark_failures_total",
                        "nextbest_model_age_seconds",
                        "nextbest_model_staleness_seconds_sum",
                        "nextbest_model_staleness_seconds_count",
                    )
                )
            }
        results["api_worker_metrics"] = api_metrics
        state = RedisState(REDIS)
        sizes = [state.memory_usage("profile", f"u{n}") for n in range(0, 5000, 50)]
        results["redis_bytes_per_profile"] = statistics.mean(s for s in sizes if s)
        with psycopg.connect(env["NEXTBEST_DATA"], autocommit=True) as db:
            results["postgres_events"] = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        for w in [*apis, *folds]:
            w.stop()
        delete_stream(env["NEXTBEST_BUS"], args.partitions)
        with psycopg.connect(PG, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")
        RedisState(REDIS).client.flushdb()
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
