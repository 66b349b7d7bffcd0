"""Operating a real server (issue 17, "Operable"): ``/metrics`` for a monitoring system,
``/readyz``, a request id on every answer and in JSON access lines that hold no secret, and
``nextbest serve`` stopping with one clear line when a backend cannot be reached."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nextbest.api.customer_token import mint_customer_token
from nextbest.api.logs import JsonFormatter
from nextbest.errors import StoreUnavailable
from tests.conftest import LiveServer, make_settings, serving
from tests.http.helpers import fresh_user, msg
from tests.http.test_feedback_http import customer, decided, promotion
from tests.postgres import scratch_schema
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, TOKEN_SECRET, WRITE_KEY

METRICS_KEY = "test-metrics-key"


def post(http: httpx.Client, path: str, body: Any, key: str = WRITE_KEY) -> httpx.Response:
    return http.post(path, json=body, auth=(key, ""))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, metrics_keys=frozenset({METRICS_KEY}))
    with serving(settings) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def scrape(http: httpx.Client, key: str = METRICS_KEY) -> dict[Any, float]:
    resp = http.get("/metrics", auth=(key, ""))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(resp.text)


# ---------------------------------------------------------------- /metrics
def test_metrics_need_a_metrics_or_admin_key(client: httpx.Client):
    assert client.get("/metrics").status_code == 401
    for key in (WRITE_KEY, BROWSER_KEY, SERVER_KEY):
        resp = client.get("/metrics", auth=(key, ""))
        assert resp.status_code == 403, (key, resp.text)
    scrape(client, METRICS_KEY)
    scrape(client, ADMIN_KEY)
    # a metrics key reaches nothing else
    assert client.get("/v1/profiles/anyone", auth=(METRICS_KEY, "")).status_code == 403
    assert post(client, "/v1/track", msg("track", event="X"), METRICS_KEY).status_code == 403
    assert client.get("/v1/admin/catalog", auth=(METRICS_KEY, "")).status_code == 403


def test_metrics_count_requests_by_route_template_never_by_customer(
    server: LiveServer, client: httpx.Client
):
    user = "secret-customer-4711"
    for _ in range(3):
        client.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, ""))
    client.get("/no/such/path")
    text = client.get("/metrics", auth=(METRICS_KEY, "")).text
    assert user not in text
    s = samples(text)
    route = "/v1/profiles/{user_id}"
    assert value(s, "nextbest_http_requests_total", route=route, method="GET", status="4xx") == 3
    assert (
        value(
            s,
            "nextbest_http_request_duration_seconds_count",
            route=route,
            method="GET",
            status="4xx",
        )
        == 3
    )
    assert value(s, "nextbest_http_requests_total", route="unmatched", method="GET", status="4xx")
    # every label value is a route template of the table, or "unmatched"
    from nextbest.api.app import ROUTES

    templates = {r.path for r in ROUTES} | {"unmatched"}
    routes = {dict(k[1]).get("route") for k in s if k[0] == "nextbest_http_requests_total"}
    assert routes <= templates, routes


def test_metrics_count_events_decisions_and_feedback(server: LiveServer, client: httpx.Client):
    before = scrape(client)
    user = customer(server, client, "metrics")  # an identify: 1 accepted
    body = {
        "batch": [
            msg("page", user=user, properties={"url": "https://bank.example/mortgages/rates"}),
            msg("track", user=user, event="Application Started", properties={}),
        ]
    }
    assert post(client, "/v1/batch", body).json()["rejected"][0]["code"] == "missing_property"
    assert post(client, "/v1/batch", {"batch": "nope"}).status_code == 400
    d = decided(client, user)
    assert post(client, "/v1/track", promotion("Promotion Viewed", d, user)).status_code == 200
    # a device with no history: its view is stored, not trusted
    device = fresh_user("device")
    resp = post(client, "/v1/decide", {"placement": "home_feed", "anonymousId": device})
    anon = resp.json()
    view = msg(
        "track",
        anon=device,
        event="Promotion Viewed",
        properties={
            "promotion_id": anon["items"][0]["offer_id"],
            "decision_id": anon["decision_id"],
            "position": anon["items"][0]["position"],
        },
    )
    assert post(client, "/v1/track", view).json()["accepted"] == 1
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("nextbest_events_total", outcome="accepted") == 4  # identify, page, 2 views
    assert grew("nextbest_events_total", outcome="quarantined") == 1
    assert grew("nextbest_events_quarantined_total", code="missing_property") == 1
    assert grew("nextbest_ingest_refused_total", code="validation_error") == 1
    assert grew("nextbest_feedback_total", outcome="trusted") == 1
    assert grew("nextbest_feedback_total", outcome="untrusted") == 1
    assert grew("nextbest_decide_duration_seconds_count", placement="home_feed") == 2
    assert value(after, "nextbest_learner_waiting_views") == server.engine.pending_views
    assert value(after, "nextbest_profiles") == server.engine.profile_count


def test_a_snapshot_is_timed(client: httpx.Client):
    before = scrape(client)
    assert client.post("/v1/admin/snapshot", auth=(ADMIN_KEY, "")).status_code == 200
    after = scrape(client)
    name = "nextbest_snapshot_duration_seconds_count"
    assert value(after, name) == value(before, name) + 1


def test_several_workers_share_one_multiprocess_registry(tmp_path: Path):
    """With PROMETHEUS_MULTIPROC_DIR the values of every worker process are collected: two
    processes each count a request, and a scrape in a third sees both."""
    folder = tmp_path / "prom"
    folder.mkdir()
    code = (
        "import sys\n"
        "from nextbest.api.metrics import Metrics\n"
        "Metrics().request('/healthz', 'GET', 200, 0.001)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    read = (
        "from nextbest.api.metrics import Metrics\n"
        "from prometheus_client import generate_latest\n"
        "m = Metrics()\n"
        "assert m.multiprocess\n"
        "print(generate_latest(m.registry).decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", read], env=env, check=True, capture_output=True, text=True
    ).stdout
    s = samples(out)
    labels = {"route": "/healthz", "method": "GET", "status": "2xx"}
    assert value(s, "nextbest_http_requests_total", **labels) == 2


# ---------------------------------------------------------------- /readyz
def test_readyz_answers_without_a_key_and_names_a_store_that_does_not_answer(
    server: LiveServer, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "catalog": server.engine.catalog.version}

    def down() -> int:
        raise StoreUnavailable("PostgreSQL not reachable at 127.0.0.1:5432/test as nextbest")

    monkeypatch.setattr(server.engine.event_log, "last_seq", down)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {
        "code": "not_ready",
        "message": "event_log: PostgreSQL not reachable at 127.0.0.1:5432/test as nextbest",
    }
    assert client.get("/healthz").status_code == 200  # alive, not ready
    monkeypatch.undo()
    assert client.get("/readyz").status_code == 200


# ---------------------------------------------------------------- request ids and logs
@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the server logs, as ``nextbest serve`` writes it (``api.logs.JsonFormatter``)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nextbest")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_sane_request_id_is_echoed_and_any_other_replaced(client: httpx.Client):
    assert client.get("/healthz", headers={"X-Request-Id": "edge-7f3a.1:2"}).headers[
        "x-request-id"
    ] == ("edge-7f3a.1:2")
    for bad in ("x" * 65, "has space", "semi;colon", ""):
        echoed = client.get("/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), (bad, echoed)
    first, second = (client.get("/nowhere").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_access_lines_are_json_with_the_request_id_and_no_secret(
    tmp_path: Path, access_lines: io.StringIO
):
    """A line per request with its fields; the keys, a customer token, a body and a
    customer id in the path never appear, nor the password of the data URL."""
    password = "pw-in-url-7d1"
    try:
        with scratch_schema() as url:
            data = url.replace("://postgres@", f"://postgres:{password}@", 1)
            _requests_and_lines(tmp_path, data, access_lines, password)
    except pytest.skip.Exception:  # no PostgreSQL here: the same on SQLite
        _requests_and_lines(tmp_path, str(tmp_path / "s.sqlite"), access_lines, password)


def _requests_and_lines(tmp_path: Path, data: str, stream: io.StringIO, password: str) -> None:
    user = "cust-9931-private"
    token = mint_customer_token(TOKEN_SECRET, user, time.time() + 600)
    settings = make_settings(tmp_path, data=data)
    with serving(settings) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        resp = http.post(
            "/v1/track",
            json=msg("track", user=user, event="Calculator Used", properties={"topic": "x"}),
            auth=(BROWSER_KEY, ""),
            headers={"X-Customer-Token": token, "X-Request-Id": "req-42"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-request-id"] == "req-42"
        http.get(f"/v1/profiles/{user}", auth=(ADMIN_KEY, ""))
        http.get("/v1/profiles/x", auth=("not-a-key", ""))
        http.post(
            "/v1/batch",
            content=b'{"writeKey": "' + BROWSER_KEY.encode() + b'", "batch": []}',
            headers={"Content-Type": "text/plain"},
        )
        http.get("/readyz")
    found = lines(stream)
    access = [line for line in found if line["logger"] == "nextbest.access"]
    assert [(a["route"], a["status"], a["key_kind"]) for a in access] == [
        ("/v1/track", 200, "browser"),
        ("/v1/profiles/{user_id}", 200, "admin"),
        ("/v1/profiles/{user_id}", 401, "none"),
        ("/v1/batch", 200, "browser"),
        ("/readyz", 200, "none"),
    ]
    first = access[0]
    assert set(first) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "route",
        "status",
        "duration_ms",
        "key_kind",
    }
    assert (first["request_id"], first["method"], first["level"]) == ("req-42", "POST", "info")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert isinstance(first["duration_ms"], float)
    assert len({a["request_id"] for a in access}) == len(access)
    text = stream.getvalue()
    for secret in (BROWSER_KEY, ADMIN_KEY, "not-a-key", token, user, password, "Calculator"):
        assert secret not in text, secret


# ---------------------------------------------------------------- startup errors
@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"NEXTBEST_DATA": "postgresql://user:pw-secret@127.0.0.1:1/x"}, "PostgreSQL"),
        (
            {"NEXTBEST_DATA": ":memory:", "NEXTBEST_PROFILES": "redis://:pw-secret@127.0.0.1:1/0"},
            "Redis",
        ),
    ],
)
def test_serve_stops_with_one_clear_line_when_a_backend_is_unreachable(
    env: dict[str, str], names: str
):
    run = subprocess.run(
        [sys.executable, "-c", "from nextbest.cli import main; main()", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    err = run.stderr.strip()
    assert "\n" not in err, err
    assert err.startswith(f"nextbest: cannot start: {names}"), err
    assert "127.0.0.1:1" in err
    assert "pw-secret" not in err
    assert "Traceback" not in err
