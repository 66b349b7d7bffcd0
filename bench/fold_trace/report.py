"""Each slow freshness probe of a traced ``bench/scaled.py --trace DIR --out OUT`` run,
attributed to a stage (ms, wall clock), with the garbage collections that overlapped it:

    .venv/bin/python bench/fold_trace/report.py DIR OUT [--over 40]

- ``fold``: from the probe's 200 until the fold worker's Redis save that made it visible
  (its bus delivery, the fold's fetch, the step, the save; 0 when saved before the 200);
- ``wait``: from then until the reader's successful profile read began in the API worker
  (a read that missed it still in flight);
- ``redis``: that read of Redis; ``audit``: the audit record of the read (a PostgreSQL
  commit, before the answer); ``resp``: from then until the client had the answer.

Then the gen-2 collections of each worker (ms, objects tracked) and the fold steps that held
a probe: their thread's time on a CPU and waiting for one.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any


def load(trace: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for f in Path(trace).glob("*.jsonl"):
        lines += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return lines


def roles(lines: list[dict[str, Any]]) -> dict[int, str]:
    out = {t["pid"]: "fold" for t in lines if t["kind"] == "step"}
    out.update({t["pid"]: "api1 (writer)" for t in lines if t["kind"] == "publish"})
    out.update({t["pid"]: "api2 (reader)" for t in lines if t["kind"] == "read"})
    for t in lines:
        out.setdefault(t["pid"], "?")
    return out


def stages(p: dict[str, Any], step: dict[str, Any] | None, reads: list[dict[str, Any]]) -> dict:
    acked = p["acked"]
    visible = acked
    if step is not None:
        parts = {name: (a, b) for name, a, b in step["parts"]}
        visible = parts.get("_save_first", (0.0, step["end"]))[1]
    hits = [r for r in reads if r["found"] and acked - 0.01 <= r["start"] <= p["seen"]]
    out = {"fold": 1000 * max(0.0, visible - acked)}
    if hits:
        r = hits[-1]
        out["wait"] = 1000 * max(0.0, r["start"] - max(visible, acked))
        out["redis"] = 1000 * (r["read"] - r["start"])
        out["audit"] = 1000 * (r["end"] - r["read"])
        out["resp"] = 1000 * (p["seen"] - r["end"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("results")
    parser.add_argument("--over", type=float, default=40.0, help="ms: the probes listed")
    args = parser.parse_args()
    lines = load(args.trace)
    role = roles(lines)
    steps = {m: t for t in lines if t["kind"] == "step" for m in t["probes"]}
    reads: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for t in lines:
        if t["kind"] == "read":
            reads[t["user"]].append(t)
    by_id = {t["id"]: t.get("user") for t in lines if t["kind"] == "probe"}
    gcs = [t for t in lines if t["kind"] == "gc"]
    for pid in sorted(role):
        full = [t for t in gcs if t["pid"] == pid and t["generation"] == 2]
        shown = [(round(1000 * t["took"]), t.get("tracked")) for t in full]
        print(f"{role[pid]} {pid}: gen-2 collections (ms, objects) {shown}")
    results = json.loads(Path(args.results).read_text())
    top: collections.Counter[str] = collections.Counter()
    summed: collections.Counter[str] = collections.Counter()
    total = 0
    for key, cell in results.items():
        if not key.startswith("under_"):
            continue
        for p in cell.get("freshness_probes", []):
            total += 1
            if p["ms"] < args.over:
                continue
            step = steps.get(p["id"])
            got = stages(p, step, reads.get(p.get("user") or by_id.get(p["id"]) or "", []))
            worst = max(got, key=lambda k: got[k])
            top[worst] += 1
            summed.update(got)
            during = [
                (role[t["pid"]], round(1000 * t["took"]), t["generation"])
                for t in gcs
                if t["took"] > 0.01
                and t["start"] < p["seen"]
                and t["start"] + t["took"] > p["posted"]
            ]
            where = ""
            if step is not None:
                where = (
                    f" | step {1000 * (step['end'] - step['start']):.0f} ms, on a CPU "
                    f"{1000 * step['cpu']:.0f}, waiting for one {1000 * step['runq']:.0f}"
                )
            print(
                f"{key[6:]:>26} {p['ms']:6.1f} ms: "
                + " ".join(f"{k} {v:.1f}" for k, v in got.items())
                + f" | reads {p['reads']}{where} | gc {during}"
            )
    print(
        f"{total} probes; over {args.over:g} ms by the largest stage {dict(top)}, "
        f"ms summed { ({k: round(v) for k, v in summed.items()}) }"
    )


if __name__ == "__main__":
    main()
