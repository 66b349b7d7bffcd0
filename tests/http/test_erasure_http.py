"""Export and erasure over HTTP, on a real server: ``POST /v1/customers/{id}/export`` and
``DELETE /v1/customers/{id}`` need a server or admin key (scope ``customers:rights``); the
export holds the customer's events and profile; after the erasure the profile is gone, a
second erasure is a 404, and the audit log verifies with the erasure named by a pseudonym."""

from __future__ import annotations

import httpx

from nextbest.audit import verify
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, WRITE_KEY


def test_export_then_erase_a_customer_over_http(live_server: LiveServer, http: httpx.Client):
    user = fresh_user("erase")
    email = f"{user}@example.dk"
    first = msg("identify", user=user, anon=f"{user}-dev", traits={"email": email})
    assert send(http, body_of(first, msg("page", user=user))).json() == ok(2)
    for key in (WRITE_KEY, BROWSER_KEY):  # a public key may do neither
        assert_error(http.post(f"/v1/customers/{user}/export", auth=(key, "")), 403, "forbidden")
        assert_error(http.delete(f"/v1/customers/{user}", auth=(key, "")), 403, "forbidden")

    exported = http.post(f"/v1/customers/{user}/export", auth=(SERVER_KEY, ""))
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["user_ids"] == [user]
    assert body["anonymous_ids"] == [f"{user}-dev"]
    assert len(body["events"]) == 2
    assert body["profile"]["profile"]["traits"]["email"] == email

    erased = http.delete(f"/v1/customers/{user}", auth=(ADMIN_KEY, ""))
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["events"] == 2
    assert report["profiles"] == 1
    assert http.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, "")).status_code == 404
    assert_error(http.delete(f"/v1/customers/{user}", auth=(SERVER_KEY, "")), 404, "not_found")

    engine = live_server.engine
    entries = engine.audit.entries()
    assert verify(entries, engine.audit.head()).ok
    mine = [e for e in entries if e.seq == report["audit_seq"]]
    assert mine[0].subject == report["audit_subject"] != user
