"""The request metrics of a per-process registry (``api.metrics``), counted without a lock:
what a scrape shows is what ``prometheus_client``'s own Counter and Histogram show for the
same requests, whichever threads served them."""

from __future__ import annotations

import random
import re
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from nextbest.api.metrics import Metrics
from nextbest.ingestion import IngestResult, Rejected

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_STATUS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}


def _requests(seed: int, count: int) -> list[tuple[str, str, int, float]]:
    rnd = random.Random(seed)
    return [
        (
            rnd.choice(["/v1/track", "/healthz", "unmatched", "/v1/profiles/{user_id}"]),
            rnd.choice(["GET", "POST", "BREW", "HEAD"]),
            rnd.choice([200, 201, 302, 404, 500, 101, 0, 700]),
            rnd.choice([0.0005, 0.001, 10.0, 11.0, -1.0, float("nan"), rnd.random() * 3]),
        )
        for _ in range(count)
    ]


def _reference(requests: list[tuple[str, str, int, float]]) -> str:
    """The same requests counted by ``prometheus_client``'s Counter and Histogram."""
    registry = CollectorRegistry()
    labels = ("route", "method", "status")
    counter = Counter(
        "nextbest_http_requests",
        "HTTP requests by route template and status class",
        labels,
        registry=registry,
    )
    histogram = Histogram(
        "nextbest_http_request_duration_seconds",
        "HTTP request latency, from the first byte read to the last byte sent",
        labels,
        buckets=_BUCKETS,
        registry=registry,
    )
    for route, method, status, seconds in requests:
        verb = method if method in _METHODS else "other"
        key = (route, verb, _STATUS.get(status // 100, "other"))
        counter.labels(*key).inc()
        histogram.labels(*key).observe(seconds)
    return generate_latest(registry).decode()


def _http_part(text: str) -> str:
    """The lines of the two request metrics, their ``_created`` times left out."""
    lines = [line for line in text.splitlines() if "nextbest_http_request" in line]
    return "\n".join(re.sub(r"^(\S*_created(\{.*\})?) \S+$", r"\1", line) for line in lines)


def test_a_scrape_shows_what_prometheus_client_would():
    requests = _requests(seed=1, count=3_000)
    metrics = Metrics(from_env=False)
    for request in requests:
        metrics.request(*request)
    got = _http_part(generate_latest(metrics.registry).decode())
    assert got == _http_part(_reference(requests))
    assert 'route="/v1/track",status="2xx"} ' in got


def test_requests_served_by_several_threads_are_all_counted():
    requests = _requests(seed=2, count=2_000)
    metrics = Metrics(from_env=False)
    start = threading.Barrier(4)

    def serve(part: list[tuple[str, str, int, float]]) -> None:
        start.wait()
        for request in part:
            metrics.request(*request)

    # seconds that add up exactly whatever the order: the sums compare equal
    whole = [(r, m, s, 0.25 * (n % 9)) for n, (r, m, s, _) in enumerate(requests)]
    threads = [threading.Thread(target=serve, args=(whole[t::4],)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = _http_part(generate_latest(metrics.registry).decode())
    reference = _http_part(_reference(whole))
    # the same series and values; their order is the order each was first seen
    assert sorted(got.splitlines()) == sorted(reference.splitlines())


def _results(seed: int, count: int) -> list[IngestResult]:
    rnd = random.Random(seed)
    return [
        IngestResult(
            rnd.choice([0, 1, 1, 7]),
            rnd.choice([0, 0, 1]),
            [Rejected(i, "missing_property", "m", "$") for i in range(rnd.choice([0, 0, 2]))],
        )
        for _ in range(count)
    ]


def _events_part(text: str) -> str:
    """The lines of ``nextbest_events``, their ``_created`` times left out."""
    lines = [
        line
        for line in text.splitlines()
        if re.match(r"(# \w+ )?nextbest_events(_total|_created)?[ {]", line)
    ]
    return "\n".join(re.sub(r"^(\S*_created(\{.*\})?) \S+$", r"\1", line) for line in lines)


def test_received_messages_are_counted_as_prometheus_client_would_from_every_thread():
    results = _results(seed=3, count=2_000)
    metrics = Metrics(from_env=False)
    threads = [
        threading.Thread(target=lambda part: [metrics.ingested(r) for r in part], args=(p,))
        for p in (results[0::3], results[1::3], results[2::3])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry = CollectorRegistry()
    counter = Counter(
        "nextbest_events",
        "Messages received: accepted, duplicate, quarantined",
        ("outcome",),
        registry=registry,
    )
    children = [counter.labels(o) for o in ("accepted", "duplicate", "quarantined")]
    for r in results:
        for child, n in zip(children, (r.accepted, r.duplicates, len(r.rejected)), strict=True):
            child.inc(n)
    got = _events_part(generate_latest(metrics.registry).decode())
    assert got == _events_part(generate_latest(registry).decode())
    assert 'nextbest_events_total{outcome="quarantined"} ' in got
