"""Reloading the catalog of a running server: ``POST /v1/admin/catalog/reload`` on a real
uvicorn server, and SIGHUP on a real ``nextbest serve`` process. Both re-read the catalog the
server was started with and swap it in only if it checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, free_port
from tests.support import (
    ADMIN_KEY,
    SERVER_KEY,
    WRITE_KEY,
    batch,
    edited_catalog,
    identify,
)

RELOAD = "/v1/admin/catalog/reload"
CARD_RULE = "eligibility: segments.adult && !profile.overdrawn\n    kpi_event: Product Opened"
NO_CARDS = 'eligibility: "false"\n    kpi_event: Product Opened'


def served_catalog(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return edited_catalog(folder, {})


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text, old
    file.write_text(text.replace(old, new, 1))


@pytest.fixture
def reloadable(
    tmp_path: Path, start_server: Callable[..., LiveServer]
) -> Iterator[tuple[LiveServer, Path, httpx.Client]]:
    folder = served_catalog(tmp_path / "catalog")
    server = start_server(catalog=str(folder))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield server, folder, http


def excluded(http: httpx.Client, user: str) -> dict[str, str]:
    answer = http.post(
        "/v1/decide",
        auth=(SERVER_KEY, ""),
        json={"userId": user, "placement": "home_feed", "explain": True},
    )
    assert answer.status_code == 200, answer.text
    return {e["offer_id"]: e["why"] for e in answer.json()["excluded"]}


def test_an_admin_reloads_a_changed_catalog(reloadable) -> None:
    server, folder, http = reloadable
    http.post("/v1/batch", auth=(WRITE_KEY, ""), content=batch(identify({"age": 40}, user="u1")))
    before = http.get("/healthz").json()["catalog"]
    assert excluded(http, "u1").get("credit_card_offer") != "ineligible"
    edit(folder / "offers.yaml", CARD_RULE, NO_CARDS)

    assert http.post(RELOAD, auth=(SERVER_KEY, "")).status_code == 403
    assert http.get("/healthz").json()["catalog"] == before
    answer = http.post(RELOAD, auth=(ADMIN_KEY, ""))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "previous": before,
        "version": server.engine.catalog.version,
        "changed": True,
        "refolded": False,
        "events": 0,
        "warnings": [],
    }
    assert body["version"] != before
    assert http.get("/healthz").json()["catalog"] == body["version"]
    assert excluded(http, "u1")["credit_card_offer"] == "ineligible"
    again = http.post(RELOAD, auth=(ADMIN_KEY, "")).json()
    assert again["changed"] is False


def test_a_catalog_that_does_not_check_is_refused_and_the_old_one_serves(reloadable) -> None:
    server, folder, http = reloadable
    before = http.get("/healthz").json()["catalog"]
    edit(folder / "segments.yaml", "rule: profile.age >= 18", "rule: profile.agee >= 18")
    answer = http.post(RELOAD, auth=(ADMIN_KEY, ""))
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "catalog_error"
    assert body["message"].startswith(f"catalog {folder} not reloaded, still serving {before}")
    segments = folder / "segments.yaml"
    assert body["problems"] == [
        f"{segments}:12: $.segments[2].rule: unknown field profile.agee (did you mean profile.age?)"
    ]
    assert http.get("/healthz").json()["catalog"] == before
    assert server.engine.catalog.version == before


# ------------------------------------------------------------------ SIGHUP, a real process


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _version(url: str) -> str | None:
    try:
        return str(httpx.get(url + "/healthz", timeout=2).json()["catalog"])
    except httpx.HTTPError:
        return None


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_the_catalog_of_nextbest_serve(tmp_path: Path) -> None:
    folder = served_catalog(tmp_path / "catalog")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    nextbest = Path(sys.executable).parent / "nextbest"
    with log.open("w") as err:
        server = subprocess.Popen(
            [
                str(nextbest),
                "serve",
                "--catalog",
                str(folder),
                "--data",
                str(tmp_path / "served.sqlite"),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        )
    try:
        _wait_for(lambda: _version(url) is not None)
        first = _version(url)
        edit(folder / "offers.yaml", CARD_RULE, NO_CARDS)
        server.send_signal(signal.SIGHUP)
        _wait_for(lambda: _version(url) not in (None, first))
        second = _version(url)
        _wait_for(lambda: f"catalog reloaded: {first} -> {second}" in log.read_text())

        edit(folder / "segments.yaml", "rule: profile.age >= 18", "rule: profile.agee >= 18")
        server.send_signal(signal.SIGHUP)
        # the refusal line comes first, the problems it names after it: wait for the last
        _wait_for(lambda: "unknown field profile.agee" in log.read_text())
        text = log.read_text()
        assert f"catalog {folder} not reloaded, still serving {second}:" in text
        assert "unknown field profile.agee (did you mean profile.age?)" in text
        assert _version(url) == second  # still serving, still the catalog that checked
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    # uvicorn shuts down gracefully, then exits by the signal it caught
    assert server.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in log.read_text()
