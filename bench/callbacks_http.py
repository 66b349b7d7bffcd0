"""Callback requests over HTTP, and what the advisor placement costs a decision through the
engine (issue #19's performance line: >= 500 callback requests/s with none lost; advisor
selection <= 100 us per decision).

    PYTHONPATH=src nice -n 19 .venv/bin/python bench/callbacks_http.py          # ~1 min
    PYTHONPATH=src .venv/bin/python bench/callbacks_http.py --quick             # smoke

**HTTP.** The server (uvicorn + ``create_app`` + ``build_engine`` on a temp SQLite file,
``synchronous=FULL``: every callback and every event durable before the answer), a child
process on a free loopback port, its clock stopped on a Wednesday at noon in Copenhagen with
every advisor available: a "call me now" is offered to an expert while one has room, then
waits; one request in ten is "call me later" (a slot booked). Each request is a new customer
(userId) and one of the twelve topics with experts, with a server key. Per request the
server reads the customer's callbacks, routes, writes the callback (a compare-and-set commit
with the advisor's capacity checked) and appends its steps to the event log (the group
commit). Phases, same run, same wrk settings (one thread, ``--connections`` connections):

- ``hello``: a bare Starlette app on the same uvicorn answering ``GET /`` (the stack's
  hello-world, another child process);
- ``healthz``: nextbest's own ``GET /healthz``;
- ``callbacks``: ``POST /v1/callbacks`` (wrk, ``--seconds``);
- ``exact``: ``--exact`` requests from ``--connections`` client threads (``http.client``,
  keep-alive), every answer counted, so that the rows can be checked one for one.

Then the server stops (SIGTERM: its engine closes) and the SQLite file is read: callbacks
stored against the 200s answered (wrk abandons the requests in flight when its time is up:
those are stored but not counted, at most ``--connections``), and a ``Callback Requested``
in the event log for every callback stored. Nothing lost means: no non-2xx, every 200 a row,
every row its events.

**Engine.** In this process, the engine on the in-memory stores with the example bank,
``--profiles`` customers with a live interest in one to three topics, half the advisors
available and some callbacks in flight (the board the decisions read). Timed one call at a
time (``time_calls``): a trivial call, ``Engine.decide`` on an offer placement
(``home_hero``), ``Engine.decide`` on the advisor placement (``topic_advisor``: the card
from the desk's board), and the desk's ``board()`` alone (what every decision now reads).

Results: ``bench/results/callbacks_http.json`` (``callbacks_http_quick.json``).
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _common import (
    EXAMPLE_CATALOG,
    T0,
    Run,
    add_run_args,
    free_port,
    hello_server,
    log,
    proc_cpu_seconds,
    ratios,
    serve_settings,
    start_child,
    stop_child,
    table,
    time_calls,
    wrk_phase,
)

SERVER_KEY = "bench-server-key"
_AUTH = "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
PHONE = "+4512345678"
TOPICS = (
    "mortgage",
    "pension",
    "investing",
    "savings",
    "cards",
    "car_loan",
    "personal_loan",
    "child_savings",
    "overdraft",
    "payments",
    "travel_insurance",
    "home_insurance",
)

_LUA = """
local counter = 0
local topics = {%(topics)s}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%(auth)s"
request = function()
  counter = counter + 1
  local mode = "now"
  if counter %% 10 == 0 then mode = "later" end
  local topic = topics[(counter %% #topics) + 1]
  local body = '{"userId":"%(phase)s-' .. counter .. '","topic":"' .. topic ..
    '","mode":"' .. mode .. '","phone":"%(phone)s"}'
  return wrk.format(nil, "/v1/callbacks", nil, body)
end
"""


# ------------------------------------------------------------------------------ children
def _serve(port: int, data: str) -> int:
    """The real server on ``data``, its clock at T0, with what ``serve`` runs beside it."""
    from nextbest.settings import Settings

    settings = Settings(
        catalog=str(EXAMPLE_CATALOG),
        data=data,
        port=port,
        server_keys=frozenset({SERVER_KEY}),
        admin_keys=frozenset({"bench-admin-key"}),
        token_secret="bench-token-secret",
    )
    return serve_settings(settings, T0, background=True)


# ------------------------------------------------------------------------------ load
def _exact(port: int, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` callback requests from ``concurrency`` threads, each on a keep-alive connection
    of its own (``http.client``: a lean client, so the client's CPU stays small on a shared
    core); every answer counted."""
    import http.client
    import threading

    statuses: dict[int, int] = {}
    took: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n))
    headers = {"Authorization": _AUTH, "Content-Type": "application/json"}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[tuple[int, float]] = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = orjson.dumps(
                {
                    "userId": f"exact-{i}",
                    "topic": TOPICS[i % len(TOPICS)],
                    "mode": "later" if i % 10 == 0 else "now",
                    "phone": PHONE,
                }
            )
            started = time.perf_counter()
            conn.request("POST", "/v1/callbacks", body, headers)
            answer = conn.getresponse()
            answer.read()
            mine.append((answer.status, time.perf_counter() - started))
        conn.close()
        with lock:
            for status, seconds in mine:
                statuses[status] = statuses.get(status, 0) + 1
                took.append(seconds)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    took.sort()
    return {
        "requests": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests_per_second": round(n / wall),
        "latency_ms": {
            "p50": round(took[len(took) // 2] * 1000, 2),
            "p99": round(took[min(len(took) - 1, len(took) * 99 // 100)] * 1000, 2),
        },
    }


def _stored(data: str) -> dict[str, int]:
    """What the server's file holds once it stopped: callbacks, and the events naming each."""
    from nextbest.bootstrap import open_stores

    stores = open_stores(data)
    try:
        requested: set[str] = set()
        events = 0
        for s in stores.events.scan(0):
            events += 1
            if s.event.name == "Callback Requested":
                requested.add(str(s.event.properties.get("callback_id")))
        ids: set[str] = set()
        exact = 0
        after = ""
        while True:
            page = stores.callbacks.scan(after, 10_000)
            if not page:
                break
            ids.update(c.id for c in page)
            exact += sum(1 for c in page if c.customer.startswith("exact-"))
            after = page[-1].id
        return {
            "callbacks": len(ids),
            "exact_callbacks": exact,
            "events": events,
            "callbacks_without_their_request_event": len(ids - requested),
        }
    finally:
        stores.close()


def http_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx

    data = str(tmp / "callbacks.sqlite")
    hello_port, port = free_port(), free_port()
    hello = start_child(
        __file__, ["--child-hello", str(hello_port)], f"http://127.0.0.1:{hello_port}/"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        server = start_child(__file__, ["--child-serve", str(port), data], f"{base}/healthz")
    except BaseException:
        stop_child(hello, 60)
        raise
    phases: dict[str, Any] = {}
    try:
        from nextbest.store.catalog_files import load_catalog

        for advisor in load_catalog(EXAMPLE_CATALOG).advisors:
            r = httpx.put(
                f"{base}/v1/advisors/{advisor}/presence",
                json={"presence": "available"},
                headers={"Authorization": _AUTH},
            )
            r.raise_for_status()
        phases["hello"] = wrk_phase(
            "hello",
            f"http://127.0.0.1:{hello_port}/",
            args.seconds,
            args.connections,
            hello.pid,
            None,
        )
        phases["healthz"] = wrk_phase(
            "healthz", f"{base}/healthz", args.seconds, args.connections, server.pid, None
        )
        script = tmp / "callbacks.lua"
        script.write_text(
            _LUA
            % {
                "topics": ", ".join(f'"{t}"' for t in TOPICS),
                "auth": _AUTH,
                "phase": "wrk",
                "phone": PHONE,
            }
        )
        phases["callbacks"] = wrk_phase(
            "callbacks", f"{base}/v1/callbacks", args.seconds, args.connections, server.pid, script
        )
        cpu0 = proc_cpu_seconds(server.pid)
        phases["exact"] = _exact(port, args.exact, args.connections)
        phases["exact"]["server_cpu_seconds"] = round(proc_cpu_seconds(server.pid) - cpu0, 2)
        log(f"exact: {phases['exact']}")
    finally:
        stop_child(server, 60)
        stop_child(hello, 60)
    stored = _stored(data)
    answered = phases["callbacks"]["requests"] - phases["callbacks"]["non_2xx"]
    exact_ok = phases["exact"]["statuses"].get("200", 0)
    stored["answered_200"] = answered + exact_ok
    stored["stored_not_counted"] = stored["callbacks"] - stored["answered_200"]
    stored["exact_answered_200"] = exact_ok
    log(f"stored: {stored}")
    return {"phases": phases, "stored": stored}


# ------------------------------------------------------------------------------ engine
def engine_part(args: argparse.Namespace) -> dict[str, Any]:
    from nextbest.advisors.model import CallbackMode, Presence
    from nextbest.bootstrap import open_stores
    from nextbest.clock import FixedClock
    from nextbest.decide import DecisionRequest
    from nextbest.engine import Engine
    from nextbest.events.parse import parse_batch
    from nextbest.store.catalog_files import load_catalog

    rng = random.Random(args.seed)
    catalog = load_catalog(EXAMPLE_CATALOG)
    clock = FixedClock(T0)
    engine = Engine(catalog, open_stores(":memory:"), clock)
    urls = {
        "mortgage": "/mortgages/rates",
        "pension": "/pension/plan",
        "investing": "/investing/funds",
        "cards": "/cards/gold",
        "car_loan": "/loans/car",
        "personal_loan": "/loans/personal",
        "child_savings": "/savings/children",
    }
    users = [f"b{i}" for i in range(args.profiles)]
    messages: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        for topic in rng.sample(sorted(urls), rng.randint(1, 3)):
            for k in range(rng.randint(2, 6)):
                messages.append(
                    {
                        "type": "page",
                        "messageId": f"m-{n}-{topic}-{k}",
                        "userId": user,
                        "timestamp": T0 - rng.uniform(60, 10 * 86_400),
                        "properties": {"url": f"https://bank.example{urls[topic]}"},
                    }
                )
    for start in range(0, len(messages), 1_000):
        chunk = messages[start : start + 1_000]
        for m in chunk:
            m["timestamp"] = _iso(m["timestamp"])
        engine.ingest(parse_batch(orjson.dumps({"batch": chunk}), T0))
    desk = engine.callbacks
    advisors = sorted(catalog.advisors)
    for advisor in advisors[::2]:
        desk.set_presence(advisor, Presence.AVAILABLE)
    for i in range(args.in_flight):  # some calls in flight and booked: a board with load
        mode = CallbackMode.LATER if i % 2 else CallbackMode.NOW
        desk.request_callback(f"in-flight-{i}", TOPICS[i % len(TOPICS)], mode, PHONE)
    offers = DecisionRequest(placement="home_hero")
    card = DecisionRequest(placement="topic_advisor")
    inputs = [rng.choice(users) for _ in range(args.calls)]
    warm = inputs[: min(500, len(inputs))]

    def trivial(user: str) -> object:
        return user

    results = {
        "trivial": time_calls(trivial, inputs, warm),
        "decide_offers": time_calls(lambda u: engine.decide(offers, user_id=u), inputs, warm),
        "decide_advisor": time_calls(lambda u: engine.decide(card, user_id=u), inputs, warm),
        "board": time_calls(lambda u: desk.board(), inputs, warm),
    }
    shown = sum(1 for u in inputs[:1_000] if engine.decide(card, user_id=u).items)
    engine.release()
    for name, r in results.items():
        log(f"{name}: p50 {r['p50_us']} us, p99 {r['p99_us']} us")
    return {
        "timings": results,
        "ratios_to_trivial": {k: ratios(v, results["trivial"]) for k, v in results.items()},
        "advisor_cards_shown_per_1000": shown,
    }


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-serve":
        return _serve(int(sys.argv[2]), sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "--child-hello":
        return hello_server(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "callbacks_http")
    ap.add_argument("--seconds", type=float, default=10.0, help="per wrk phase")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--exact", type=int, default=5_000, help="requests counted one by one")
    ap.add_argument("--profiles", type=int, default=2_000)
    ap.add_argument("--in-flight", type=int, default=40, help="callbacks in flight (engine)")
    ap.add_argument("--calls", type=int, default=20_000, help="timed decisions per kind")
    ap.add_argument("--part", choices=("all", "http", "engine"), default="all")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.exact, args.profiles, args.calls = 2.0, 500, 200, 2_000
    args.name = args.name or ("callbacks_http_quick" if args.quick else "callbacks_http")
    if args.part != "engine" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    run = Run("callbacks_http", args, "starlette", "uvicorn", "httpx")
    payload: dict[str, Any] = {}
    if args.part in ("all", "http"):
        with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
            payload["http"] = http_part(args, Path(tmp))
        phases = payload["http"]["phases"]
        hello = phases["hello"]["requests_per_second"]
        rows = [
            [
                name,
                f"{p['requests_per_second']:,.0f}",
                f"{p['requests_per_second'] / hello:.2f}x",
                p["latency_ms"]["p50"],
                p["latency_ms"]["p99"],
                p.get("non_2xx", ""),
                p.get("server_cpu_us_per_request", ""),
            ]
            for name, p in phases.items()
            if name != "exact"
        ]
        exact = phases["exact"]
        rows.append(
            [
                "exact (threads)",
                f"{exact['requests_per_second']:,.0f}",
                f"{exact['requests_per_second'] / hello:.2f}x",
                exact["latency_ms"]["p50"],
                exact["latency_ms"]["p99"],
                sum(v for k, v in exact["statuses"].items() if k != "200"),
                "",
            ]
        )
        print(
            table(
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s; {args.exact:,} counted",
                ["phase", "req/s", "x hello", "p50 ms", "p99 ms", "non-2xx", "server µs/req"],
                rows,
            )
        )
        print(f"stored: {payload['http']['stored']}")
    if args.part in ("all", "engine"):
        payload["engine"] = engine_part(args)
        t = payload["engine"]["timings"]
        print(
            table(
                f"Engine.decide, {args.profiles:,} profiles, {args.calls:,} calls each",
                ["call", "p50 µs", "p90 µs", "p99 µs", "calls/s"],
                [
                    [k, v["p50_us"], v["p90_us"], v["p99_us"], f"{v['calls_per_s']:,}"]
                    for k, v in t.items()
                ],
            )
        )
    run.write(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
