"""The served OpenAPI document is valid, complete, and good enough for a client generated from
it (openapi-python-client) to call every route of a real server and parse every answer."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from nextbest.api.app import ROUTES
from nextbest.clock import FixedClock
from tests.conftest import LiveServer, make_settings, serving
from tests.http.test_api import token
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, T0, WRITE_KEY, iso

GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def test_the_served_document_is_valid_openapi(live_server: LiveServer):
    document = httpx.get(f"{live_server.url}/openapi.json").json()
    validate(document)
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(path.replace("}", "{").split("{")[1::2]), (method, path)
            content = op["responses"]["200"]["content"]
            if "text/plain" in content:  # /metrics: Prometheus' text format
                assert content["text/plain"]["schema"] == {"type": "string"}, (method, path)
                continue
            schema = content["application/json"]["schema"]
            refs = [s.get("$ref") for s in schema.get("oneOf", [schema])]
            assert all(refs), f"{method} {path}: a 200 body without a schema"
    decide = document["paths"]["/v1/decide"]["post"]["responses"]["200"]["content"]
    answers = decide["application/json"]["schema"]["oneOf"]
    full, page = (s["$ref"].rsplit("/", 1)[1] for s in answers)
    components = document["components"]["schemas"]
    assert "excluded" not in components[full]["required"]
    assert "excluded" in components["Decision"]["required"]
    # what a browser key gets: only what a page renders
    assert page == "PageDecision"
    assert set(components[page]["properties"]) == {"decision_id", "placement", "items"}
    item = components["PageItem"]["properties"]
    assert set(item) == {"position", "offer_id", "content", "reasons", "advisor"}
    assert "advisor" not in components["PageItem"]["required"]  # only an advisor card's
    card = components["PageAdvisorCard"]["properties"]
    assert set(card) == {
        "topic",
        "topic_name",
        "reason",
        "advisor",
        "actions",
        "available",
        "slots",
    }
    # what a customer's key gets of a callback: no history, nobody who declined
    callback = document["paths"]["/v1/callbacks/{callback_id}"]["get"]
    answers = callback["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"]
    assert [s["$ref"].rsplit("/", 1)[1] for s in answers] == ["Callback", "CustomerCallback"]
    assert "history" not in components["CustomerCallback"]["properties"]


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """A client generated from the document (the document of a fresh app: the same table)."""
    if not GENERATOR.exists():
        pytest.skip("openapi-python-client is not installed (pip install -e .[dev])")
    from nextbest.api.app import openapi_document

    folder = tmp_path_factory.mktemp("client")
    spec = folder / "openapi.json"
    spec.write_bytes(httpx.Response(200, json=openapi_document()).content)
    config = folder / "config.yaml"
    config.write_text("post_hooks: []\n")
    subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(spec),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(folder / "nextbest_client"),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("nextbest_client")
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.startswith("nextbest_client")]:
            del sys.modules[name]


def _op(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.default.{name}")


def _model(package: ModuleType, name: str) -> Any:
    return getattr(importlib.import_module(f"{package.__name__}.models"), name)


def _message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": "gen-user", "timestamp": iso(T0 - 60), **fields}


@pytest.fixture
def t0_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The example bank on a clock stopped at T0 (a Wednesday noon in Copenhagen: the
    advisors are on shift)."""
    with serving(make_settings(tmp_path), clock=FixedClock(T0)) as server:
        yield server


def test_a_generated_client_calls_every_route(t0_server: LiveServer, client_package: ModuleType):
    with contextlib.ExitStack() as stack:
        _every_route(t0_server, client_package, stack)


def _every_route(live_server: LiveServer, pkg: ModuleType, stack: contextlib.ExitStack) -> None:
    clients = {
        key: stack.enter_context(
            pkg.AuthenticatedClient(
                base_url=live_server.url, token=key, raise_on_unexpected_status=True
            )
        )
        for key in (WRITE_KEY, BROWSER_KEY, SERVER_KEY, ADMIN_KEY)
    }
    public = stack.enter_context(
        pkg.Client(base_url=live_server.url, raise_on_unexpected_status=True)
    )
    called: set[str] = set()

    def call(operation: str, client: Any, model: str, **kwargs: Any) -> Any:
        response = _op(pkg, operation).sync_detailed(client=client, **kwargs)
        assert response.status_code == 200, (operation, response.content)
        assert type(response.parsed).__name__ == model, (operation, response.parsed)
        called.add(operation)
        return response.parsed

    write = clients[WRITE_KEY]
    batch = _model(pkg, "WireBatch").from_dict(
        {
            "batch": [
                _message("identify", traits={"birthday": "1990-01-01"}),
                _message("page", properties={"url": "https://bank.example/mortgages/rates"}),
                _message("track", event="Application Started", properties={}),
            ]
        }
    )
    answer = call("post_batch", write, "IngestResponse", body=batch)
    assert (answer.accepted, [r.code for r in answer.rejected]) == (2, ["missing_property"])
    singles = {
        "track": ("WireTrack", {"event": "Calculator Used", "properties": {"topic": "mortgage"}}),
        "page": ("WirePage", {"properties": {"url": "https://bank.example/mortgages/calculator"}}),
        "screen": ("WireScreen", {"name": "Home"}),
        "identify": ("WireIdentify", {"traits": {"products": ["current_account"]}}),
        "alias": ("WireAlias", {"previousId": "gen-device"}),
        "group": ("WireGroup", {"groupId": "household-1"}),
    }
    for kind, (model, fields) in singles.items():
        body = _model(pkg, model).from_dict(_message(kind, **fields))
        assert call(f"post_{kind}", write, "IngestResponse", body=body).accepted == 1
    for kind, (model, fields) in singles.items():  # analytics.js's short paths
        body = _model(pkg, model).from_dict(_message(kind, messageId=f"short-{kind}", **fields))
        assert call(f"post_{kind[0]}", write, "IngestResponse", body=body).accepted == 1
    assert call("post_b", write, "IngestResponse", body=batch).duplicates == 2
    server = clients[SERVER_KEY]
    decide = _model(pkg, "DecideBody").from_dict({"placement": "home_feed", "userId": "gen-user"})
    decision = call("post_decide", server, "PostDecideResponse", body=decide)
    anonymous = _model(pkg, "DecideBody").from_dict(
        {"placement": "home_feed", "anonymousId": "gen-device"}
    )
    page = call("post_decide", clients[BROWSER_KEY], "PageDecision", body=anonymous)
    assert page.decision_id
    assert page.items
    assert decision.decision_id
    call("get_decisions_decision_id", server, "Decision", decision_id=decision.decision_id)
    me = stack.enter_context(  # the customer's own pages: a customer token says whose
        pkg.AuthenticatedClient(
            base_url=live_server.url,
            token=BROWSER_KEY,
            headers=token("gen-user"),
            raise_on_unexpected_status=True,
        )
    )
    mine = call("get_me_data", me, "MyData", lang="de")
    assert mine.language == "de"
    why = call("get_me_why_decision_id", me, "WhyPage", decision_id=decision.decision_id)
    assert why.decision_id == decision.decision_id
    choice = _model(pkg, "ConsentBody").from_dict({"purposes": {"marketing": False}})
    set_consent = call(
        "put_customers_customer_id_consent",
        server,
        "ConsentAnswer",
        customer_id="gen-consent",
        body=choice,
    )
    assert set_consent.grants["marketing"]["granted"] is False
    profile = call("get_profiles_user_id", server, "ProfileResponse", user_id="gen-user")
    assert profile.customer_id == "gen-user"
    admin = clients[ADMIN_KEY]
    call("get_admin_catalog", admin, "CatalogResponse")
    held = call("get_admin_quarantine", admin, "QuarantineList", limit=10)
    assert held.held == 1
    call("post_admin_quarantine_replay", admin, "QuarantineReplayed")
    reload = call("post_admin_catalog_reload", admin, "CatalogReload")
    assert reload.changed is False  # the same files: nothing to swap
    call("post_admin_snapshot", admin, "SnapshotResponse")
    listed = call("get_experiments", admin, "ExperimentList")
    assert "mortgage_q4" in [e.campaign for e in listed.experiments]
    result = call("get_experiments_campaign", admin, "ExperimentResult", campaign="mortgage_q4")
    assert result.verdict == "collecting_data"
    _callback_routes(call, pkg, server, admin)
    audit = call("get_audit", admin, "AuditList", subject="gen-user", limit=10)
    assert [e.action for e in audit.entries] == [
        "decision.read",
        "profile.read",
        "customer_view.read",
    ]
    assert audit.entries[1].actor.kind == "server"
    assert audit.head.seq >= 3  # the quarantine listing too
    gone = _message("page", userId="gen-erase", messageId="gen-erase-1", properties={})
    call("post_page", write, "IngestResponse", body=_model(pkg, "WirePage").from_dict(gone))
    exported = call("post_customers_user_id_export", server, "CustomerExport", user_id="gen-erase")
    assert len(exported.events) == 1
    erased = call("delete_customers_user_id", admin, "ErasureReport", user_id="gen-erase")
    assert erased.events == 1
    status = call("get_erasures_receipt", admin, "ErasureOutcome", receipt=erased.receipt)
    assert (status.status, status.events) == ("erased", 1)
    call("get_healthz", public, "HealthResponse")
    assert call("get_readyz", public, "ReadyResponse").status == "ready"
    text = call("get_metrics", admin, "str")
    assert "nextbest_http_requests_total" in text
    call("get_openapi_json", public, "OpenAPIDocument")

    from nextbest.api.app import _operation_id

    assert called == {_operation_id(r) for r in ROUTES}, "a route the generated client never called"


def _callback_routes(call: Any, pkg: ModuleType, server: Any, admin: Any) -> None:
    """Every callback and advisor route, with the bank's keys (a server key acts for the
    telephony system and any advisor)."""
    presence = _model(pkg, "PresenceBody").from_dict({"presence": "available"})
    report = call(
        "put_advisors_advisor_id_presence",
        server,
        "PresenceReport",
        advisor_id="anna_holm",
        body=presence,
    )
    assert report.presence == "available"
    ask = {"userId": "gen-user", "topic": "mortgage", "mode": "now", "phone": "+4512345678"}
    made = call(
        "post_callbacks", server, "Callback", body=_model(pkg, "CallbackBody").from_dict(ask)
    )
    assert (made.state, made.advisor_id) == ("offered", "anna_holm")
    act = _model(pkg, "AdvisorActionBody").from_dict({})
    for verb, state in (
        ("accept", "accepted"),
        ("connect", "connected"),
        ("complete", "completed"),
    ):
        done = call(
            f"post_callbacks_callback_id_{verb}", server, "Callback", callback_id=made.id, body=act
        )
        assert done.state == state
    other = dict(ask, topic="savings")
    second = call(
        "post_callbacks", server, "Callback", body=_model(pkg, "CallbackBody").from_dict(other)
    )
    assert second.advisor_id == "anna_holm"
    back = call(
        "post_callbacks_callback_id_decline", server, "Callback", callback_id=second.id, body=act
    )
    assert back.declined_by == ["anna_holm"]
    got = call("get_callbacks_callback_id", server, "Callback", callback_id=second.id)
    assert got.id == second.id
    gone = call("post_callbacks_callback_id_cancel", server, "Callback", callback_id=second.id)
    assert gone.state == "cancelled"
    queue = call("get_advisors_advisor_id_queue", server, "AdvisorQueue", advisor_id="anna_holm")
    assert queue.callbacks == []
    board = call("get_advisors", server, "AdvisorList")
    assert "anna_holm" in [a.id for a in board.advisors]
    view = call("get_advisor_customers_customer_id", server, "CustomerView", customer_id="gen-user")
    assert {c.id for c in view.callbacks} == {second.id, made.id}
    swept = call(
        "post_admin_callbacks_sweep",
        admin,
        "SweepReport",
        body=_model(pkg, "SweepBody").from_dict({}),
    )
    assert swept.now == T0
