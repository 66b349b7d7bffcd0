"""The audit log over HTTP, on a real server: every read of a customer's profile or
decisions by a server or admin key, every consent change and every catalog change is an
entry naming who did it (the key's kind and fingerprint, never the key), what and about
whom; ``GET /v1/audit`` (admin only) lists them and the chain verifies."""

from __future__ import annotations

from pathlib import Path

import httpx

from nextbest.audit import verify
from nextbest.guard.origin import key_id
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.http.test_catalog_reload import CARD_RULE, NO_CARDS, edit, served_catalog
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, WRITE_KEY


def audit(http: httpx.Client, **query: object) -> dict:
    answer = http.get("/v1/audit", params=query, auth=(ADMIN_KEY, ""))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_reads_of_a_customer_are_recorded_with_who_read_them(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("read")
    assert send(http, body_of(msg("identify", user=user, traits={"age": 40}))).json() == ok(1)
    assert http.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, "")).status_code == 200
    assert http.get(f"/v1/profiles/{user}", auth=(ADMIN_KEY, "")).status_code == 200
    assert http.get("/v1/profiles/nobody-at-all", auth=(SERVER_KEY, "")).status_code == 404
    decided = http.post(
        "/v1/decide", json={"userId": user, "placement": "home_feed"}, auth=(SERVER_KEY, "")
    ).json()
    live_server.engine.flush()
    path = f"/v1/decisions/{decided['decision_id']}"
    assert http.get(path, auth=(SERVER_KEY, "")).status_code == 200
    # a key that may not read profiles is refused before anything is read or recorded
    assert_error(http.get(f"/v1/profiles/{user}", auth=(BROWSER_KEY, "")), 403, "forbidden")
    assert_error(http.get(f"/v1/profiles/{user}", auth=(WRITE_KEY, "")), 403, "forbidden")

    mine = audit(http, subject=user)["entries"]
    assert [(e["action"], e["actor"]) for e in mine] == [
        ("profile.read", {"kind": "server", "key_id": key_id("server", SERVER_KEY)}),
        ("profile.read", {"kind": "admin", "key_id": key_id("admin", ADMIN_KEY)}),
        ("decision.read", {"kind": "server", "key_id": key_id("server", SERVER_KEY)}),
    ]
    assert mine[0]["details"] == {"found": True}
    assert mine[2]["details"] == {"decision_id": decided["decision_id"], "found": True}
    (missing,) = audit(http, subject="nobody-at-all")["entries"]
    assert missing["details"] == {"found": False}
    # no key ever reaches the log, only its fingerprint
    everything = http.get("/v1/audit", auth=(ADMIN_KEY, "")).text
    assert SERVER_KEY not in everything
    assert ADMIN_KEY not in everything


def test_consent_changes_are_recorded_with_before_and_after(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("consent")
    first = msg("identify", user=user, traits={"consent": {"marketing": True}})
    assert send(http, body_of(first), key=SERVER_KEY).json() == ok(1)
    withdraw = msg(
        "track", user=user, event="Consent Updated", properties={"purposes": {"marketing": False}}
    )
    same = msg(
        "track", user=user, event="Consent Updated", properties={"purposes": {"marketing": False}}
    )
    unrelated = msg("identify", user=user, traits={"age": 33})
    assert send(http, body_of(withdraw, same, unrelated)).json() == ok(3)
    entries = audit(http, subject=user)["entries"]
    assert [e["action"] for e in entries] == ["consent.changed", "consent.changed"]
    server, write = entries
    assert server["actor"] == {"kind": "server", "key_id": key_id("server", SERVER_KEY)}
    assert server["details"]["before"] == {}
    assert server["details"]["after"] == {"marketing": True}
    assert server["details"]["event"] == "identify"
    assert write["actor"]["kind"] == "write"
    assert write["details"]["before"] == {"marketing": True}
    assert write["details"]["after"] == {"marketing": False}
    assert write["details"]["message_id"] == withdraw["messageId"]
    assert write["details"]["event"] == "Consent Updated"
    # a replay folds the same events again: it records nothing more
    head = audit(http)["head"]
    assert live_server.engine.replay().identical
    assert audit(http)["head"] == head


def test_a_catalog_change_is_recorded_with_who_and_the_diff(tmp_path: Path, start_server):
    folder = served_catalog(tmp_path / "catalog")
    server = start_server(catalog=str(folder))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = http.get("/healthz").json()["catalog"]
        unchanged = http.post("/v1/admin/catalog/reload", auth=(ADMIN_KEY, ""))
        assert unchanged.json()["changed"] is False
        assert audit(http, subject="catalog")["entries"] == []  # nothing changed
        edit(folder / "offers.yaml", CARD_RULE, NO_CARDS)
        answer = http.post("/v1/admin/catalog/reload", auth=(ADMIN_KEY, ""))
        assert answer.status_code == 200, answer.text
        (entry,) = audit(http, subject="catalog")["entries"]
    assert entry["action"] == "catalog.reloaded"
    assert entry["actor"] == {"kind": "admin", "key_id": key_id("admin", ADMIN_KEY)}
    details = entry["details"]
    assert (details["previous"], details["version"]) == (before, answer.json()["version"])
    assert details["source"] == str(folder)
    diff = details["diff"].splitlines()
    assert diff[0] == f"--- catalog {before}"
    removed = [line for line in diff if line.startswith("-") and "segments.adult" in line]
    added = [line for line in diff if line.startswith("+") and "'false'" in line]
    assert removed
    assert added, diff


def test_the_audit_log_is_for_admin_keys_and_pages_by_seq(
    live_server: LiveServer, http: httpx.Client
):
    for key in (SERVER_KEY, WRITE_KEY, BROWSER_KEY):
        assert_error(http.get("/v1/audit", auth=(key, "")), 403, "forbidden")
    users = [fresh_user("page") for _ in range(5)]
    for user in users:
        send(http, body_of(msg("identify", user=user)))
        http.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, ""))
    whole = audit(http)
    assert [e["seq"] for e in whole["entries"]] == [1, 2, 3, 4, 5]
    assert whole["head"] == {"seq": 5, "hash": whole["entries"][-1]["hash"]}
    assert [e["seq"] for e in audit(http, after=2, limit=2)["entries"]] == [3, 4]
    assert_error(
        http.get("/v1/audit", params={"limit": 5000}, auth=(ADMIN_KEY, "")),
        400,
        "validation_error",
        "$.query.limit",
    )
    stored = live_server.engine.audit
    assert verify(stored.entries(), stored.head()).ok
