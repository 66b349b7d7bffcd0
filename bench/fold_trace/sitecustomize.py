"""A debugging tracer for ``bench/scaled.py --trace DIR`` (issue #17, freshness outliers):
with this directory on a worker's PYTHONPATH and ``NEXTBEST_TRACE=DIR`` set, the worker
writes ``DIR/<pid>.jsonl``, wall-clock timestamps (``time.time()``) of:

- every freshness probe (a message whose messageId starts ``fp-``): when the bus adapter
  received it, when the fold's fetch returned it, its step's stages (fetch, fold, publish,
  save) and what the step did before them (leases, backpressure, relays, trimming);
- on an API worker, the publish of a probe (start, PubAck);
- on the reading API worker, each profile read of a probe's customer: its read of Redis,
  then its audit record (a PostgreSQL commit, before the answer);
- every fold step longer than 15 ms, every log commit longer than 10 ms, every model writer
  step longer than 5 ms, every garbage collection longer than 2 ms, with the thread's time on
  the CPU and waiting for one (``/proc/self/task/<tid>/schedstat``).

Nothing of it runs unless ``NEXTBEST_TRACE`` is set; it patches methods, the engine knows
nothing of it. It wraps the fold workers' private steps by name (``_stage``,
``_write_group``, ...), as a profiler would see them: this is a diagnostic tool, not a
benchmark, and no figure of ``bench/`` or test depends on it; a rename of those steps breaks
only the trace.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from typing import Any

DIR = os.environ.get("NEXTBEST_TRACE")


def _install() -> None:
    import nextbest.bus.nats as nats_mod
    from nextbest import fold_loop, model_writer, partitioned_fold

    out = open(os.path.join(DIR or ".", f"{os.getpid()}.jsonl"), "a", buffering=1)  # noqa: SIM115
    lock = threading.Lock()

    def write(kind: str, **fields: Any) -> None:
        fields["kind"] = kind
        fields["pid"] = os.getpid()
        with lock:
            out.write(json.dumps(fields) + "\n")

    def sched() -> tuple[float, float]:
        """This thread's seconds on a CPU and waiting for one (runqueue)."""
        try:
            with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
                run, wait, _ = f.read().split()
            return int(run) / 1e9, int(wait) / 1e9
        except OSError:
            return 0.0, 0.0

    arrived: dict[str, float] = {}
    real_delivery = nats_mod.Delivery

    def delivery(*args: Any) -> Any:
        d = real_delivery(*args)
        if d.message_id.startswith("fp-"):
            arrived[d.message_id] = time.time()
        return d

    nats_mod.Delivery = delivery  # type: ignore[misc,assignment]

    real_publish = nats_mod.NatsBus.publish

    def publish(self: Any, messages: Any) -> Any:
        probes = [m.message_id for m in messages if m.message_id.startswith("fp-")]
        t0 = time.time()
        got = real_publish(self, messages)
        if probes:
            write("publish", ids=probes, start=t0, end=time.time(), n=len(messages))
        return got

    nats_mod.NatsBus.publish = publish  # type: ignore[method-assign]

    cur: dict[str, Any] = {}
    fetched: dict[str, dict[str, float]] = {}
    real_fetch_any = nats_mod.NatsBus.fetch_any

    def fetch_any(self: Any, consumers: Any, n: int, wait: float) -> Any:
        t0 = time.time()
        got = real_fetch_any(self, consumers, n, wait)
        t1 = time.time()
        cur.setdefault("fetch", []).append((t0, t1, wait, len(got)))
        for d in got:
            if d.message_id.startswith("fp-"):
                fetched[d.message_id] = {
                    "arrived": arrived.pop(d.message_id, 0.0),
                    "fetch_start": t0,
                    "fetched": t1,
                    "fetch_wait": wait,
                    "fetch_n": len(got),
                }
        return got

    nats_mod.NatsBus.fetch_any = fetch_any  # type: ignore[method-assign]

    pf = partitioned_fold.PartitionedFold

    part_cpu: dict[str, list[float]] = {}
    dumped = [time.monotonic()]

    def threads_cpu() -> dict[str, float]:
        out: dict[str, float] = {}
        for t in threading.enumerate():
            try:
                with open(f"/proc/self/task/{t.native_id}/schedstat") as f:
                    out[t.name] = out.get(t.name, 0.0) + int(f.read().split()[0]) / 1e9
            except (OSError, TypeError):
                continue
        return out

    def dump(self: Any) -> None:
        """Every 2 s: the CPU seconds of each thread and of each part of the fold step so
        far, and the events folded (cumulative)."""
        if time.monotonic() - dumped[0] < 2.0:
            return
        dumped[0] = time.monotonic()
        write(
            "cpu",
            start=time.time(),
            threads=threads_cpu(),
            parts={k: v for k, v in part_cpu.items()},
            events=self.stats.events,
            logged=self.stats.events_logged,
            batches=self.stats.batches,
            commits=self.stats.segments_logged,
        )

    def timed(name: str) -> None:
        real = getattr(pf, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            c0 = time.thread_time()
            try:
                return real(self, *args, **kwargs)
            finally:
                cur.setdefault("parts", []).append((name, t0, time.time()))
                took = part_cpu.setdefault(name, [0.0, 0])
                took[0] += time.thread_time() - c0
                took[1] += 1

        setattr(pf, name, wrapper)

    for name in (
        "_keep_leases",
        "_wait_for_room",
        "_send_alerts",
        "_check_relays",
        "_unpark",
        "_receive",
        "_stage",
        "_publish",
        "_save_first",
        "_seal",
        "_second_half",
        "_trim",
        "_log_here",
        "_logged_already",
        "_write_group",
        "_acknowledge",
        "step",
    ):
        timed(name)

    real_stage = pf._stage

    def stage(self: Any, work: Any) -> Any:
        ids = [d.message_id for ds in work.values() for d in ds if d.message_id.startswith("fp-")]
        cur.setdefault("probes", []).extend(ids)
        cur["events"] = cur.get("events", 0) + sum(len(ds) for ds in work.values())
        return real_stage(self, work)

    pf._stage = stage  # type: ignore[method-assign]

    real_step = pf.step

    def step(self: Any) -> Any:
        cur.clear()
        t0 = time.time()
        s0 = sched()
        try:
            return real_step(self)
        finally:
            t1 = time.time()
            s1 = sched()
            dump(self)
            probes = cur.get("probes", [])
            if probes or t1 - t0 > 0.015:
                write(
                    "step",
                    start=t0,
                    end=t1,
                    cpu=s1[0] - s0[0],
                    runq=s1[1] - s0[1],
                    events=cur.get("events", 0),
                    parts=cur.get("parts", []),
                    fetch=cur.get("fetch", []),
                    probes={m: fetched.pop(m, {}) for m in probes},
                    partitions=list(self.partitions),
                )

    pf.step = step  # type: ignore[method-assign]

    from nextbest import fold_worker

    real_single = fold_worker.FoldWorker.step

    def single_step(self: Any) -> Any:
        try:
            return real_single(self)
        finally:
            dump(self)

    fold_worker.FoldWorker.step = single_step  # type: ignore[method-assign]

    real_write = pf._write_group

    def write_group(self: Any, group: Any, *, retry: bool) -> Any:
        t0 = time.time()
        s0 = sched()
        try:
            return real_write(self, group, retry=retry)
        finally:
            t1 = time.time()
            if t1 - t0 > 0.010:
                s1 = sched()
                n = sum(len(g.events) for g in group)
                write("log", start=t0, end=t1, events=n, cpu=s1[0] - s0[0], runq=s1[1] - s0[1])

    pf._write_group = write_group  # type: ignore[method-assign]
    del fold_loop

    mw = model_writer.ModelWriter
    real_mstep = mw.step

    def mstep(self: Any) -> Any:
        t0 = time.time()
        s0 = sched()
        try:
            return real_mstep(self)
        finally:
            t1 = time.time()
            s1 = sched()
            busy = s1[0] - s0[0]
            if busy > 0.005 or t1 - t0 - (s1[1] - s0[1]) > 0.25:
                write("model", start=t0, end=t1, cpu=busy, runq=s1[1] - s0[1])

    mw.step = mstep  # type: ignore[method-assign]

    from nextbest import auditing

    real_read = auditing.read_profile

    def read_profile(service: Any, actor: Any, customer_id: str) -> Any:
        if not customer_id.startswith("probe-"):
            return real_read(service, actor, customer_id)
        t0 = time.time()
        s0 = sched()
        view = service.profile_view(customer_id)
        t1 = time.time()
        found = {"found": view is not None}
        auditing.record(service, actor, auditing.AuditAction.PROFILE_READ, customer_id, found)
        t2 = time.time()
        s1 = sched()
        write(
            "read",
            user=customer_id,
            start=t0,
            read=t1,
            end=t2,
            found=view is not None,
            cpu=s1[0] - s0[0],
            runq=s1[1] - s0[1],
        )
        return view

    auditing.read_profile = read_profile
    import nextbest.api.app as app_mod

    app_mod.read_profile = read_profile  # type: ignore[attr-defined]

    gc_start: dict[int, tuple[float, float]] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        tid = threading.get_ident()
        if phase == "start":
            gc_start[tid] = (time.time(), time.perf_counter())
            return
        began = gc_start.pop(tid, None)
        if began is None:
            return
        took = time.perf_counter() - began[1]
        if took > 0.002 or info.get("generation") == 2:
            write(
                "gc",
                start=began[0],
                took=took,
                generation=info.get("generation"),
                tracked=len(gc.get_objects()) if info.get("generation") == 2 else None,
                frozen=gc.get_freeze_count(),
                collected=info.get("collected"),
                thread=threading.current_thread().name,
            )

    gc.callbacks.append(on_gc)


if DIR:
    _install()
