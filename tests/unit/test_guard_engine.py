"""The identity-theft guard in the engine, with the example bank: an injected takeover gets
"Was this you?" first, no commercial offer and no advisor card, and exactly one alert in the
fraud channel's outbox; the same customer's own next session is as if nothing happened;
replay and a restart rebuild the same baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.decide.pipeline import greedy
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.guard.alert import FRAUD_CHANNEL
from nextbest.profile.consent import View
from nextbest.store import OutboxState
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, T0, batch, edited_catalog, identify, page, track

USER = "victim-1"
HOME = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36",
    "locale": "da-DK",
    "timezone": "Europe/Copenhagen",
}
FRAUD = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "locale": "en-PH",
    "timezone": "Asia/Manila",
}
#: the victim's usual evening hour, as a time of T0's day (T0 is 10:00 UTC)
EVENING = T0 + 9 * 3600


def on(context: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "context": context}


def history(days: int = 12) -> list[dict[str, Any]]:
    """The victim's evenings at home: accounts, statements, mortgage pages."""
    out = [on(HOME, identify({"age": 40}, at=EVENING - 30 * DAY - 60, user=USER, anon="home"))]
    for d in range(days):
        start = EVENING - 30 * DAY + d * DAY
        for i, path in enumerate(["/", "/accounts", "/mortgages/rates", "/accounts/statements"]):
            url = "https://bank.example" + path
            out.append(on(HOME, page(url, at=start + i * 50, user=USER, anon="home")))
    return out


def takeover(at: float) -> list[dict[str, Any]]:
    """A fraudster on a new device in Manila: logs in, straight to a new payee, then the
    contact details."""
    return [
        on(FRAUD, page("https://bank.example/login", at=at, anon="fraud-dev")),
        on(FRAUD, identify({}, at=at + 6, user=USER, anon="fraud-dev")),
        on(FRAUD, page("https://bank.example/payees/new", at=at + 12, user=USER, anon="fraud-dev")),
        on(FRAUD, track("Payee Added", at=at + 20, user=USER, anon="fraud-dev")),
        on(
            FRAUD,
            page(
                "https://bank.example/settings/contact-details",
                at=at + 30,
                user=USER,
                anon="fraud-dev",
            ),
        ),
    ]


def own_session(at: float) -> list[dict[str, Any]]:
    return [
        on(HOME, page("https://bank.example" + path, at=at + i * 45, user=USER, anon="home"))
        for i, path in enumerate(["/", "/accounts", "/mortgages/rates"])
    ]


def send(engine: Engine, messages: list[dict[str, Any]]) -> None:
    engine.ingest_batch(batch(*messages))


def fraud_alerts(engine: Engine) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in engine.outbox.messages() if m.channel == FRAUD_CHANNEL]


def feed(engine: Engine, now: float) -> Any:
    return engine.decide(DecisionRequest(placement="home_feed"), user_id=USER, choose=greedy)


def test_a_takeover_gets_was_this_you_no_sales_and_one_alert(
    make_engine: Callable[..., Engine], clock: FixedClock
) -> None:
    engine = make_engine("sqlite")
    send(engine, history())
    commercial = engine.catalog.commercial_offers
    before = feed(engine, T0)
    assert {i.offer_id for i in before.items} & commercial  # the customer is sold to
    assert fraud_alerts(engine) == []

    at = EVENING - DAY  # at the victim's own hour: flagged at the payee page, not before
    clock.set(at + 60)
    send(engine, takeover(at)[:2])  # logged in
    assert "was_this_you" not in [i.offer_id for i in feed(engine, at).items]
    assert fraud_alerts(engine) == []
    send(engine, takeover(at)[2:3])  # the payee page
    d = feed(engine, T0)
    assert d.items[0].offer_id == "was_this_you"
    assert d.items[0].content["title"] == "Was this you?"
    assert d.urgent == ["was_this_you"]
    assert not {i.offer_id for i in d.items} & commercial
    held = {e.offer_id for e in d.excluded if e.why is Suppression.SECURITY}
    assert held == set(commercial)
    assert not d.features or all(k.startswith("interest:") for k in d.features)

    card = engine.decide(DecisionRequest(placement="topic_advisor"), user_id=USER)
    assert card.items == []
    assert {e.why for e in card.excluded} == {Suppression.SECURITY}

    send(engine, takeover(at)[3:])  # more of the same session: no second alert
    feed(engine, T0)
    (alert,) = fraud_alerts(engine)
    (message,) = [m for m in engine.outbox.messages() if m.channel == FRAUD_CHANNEL]
    assert message.destination == "fraud"
    assert message.key.startswith("guard-")
    assert message.state is OutboxState.PENDING
    assert alert["customer_id"] == USER
    assert alert["steps_to_flag"] == 2  # the login page, then the payee page
    assert alert["seconds_to_flag"] == 12.0
    assert alert["devices"] == ["fraud-dev"]
    assert alert["places"] == ["tz:Asia/Manila"]
    assert alert["sensitive"] == ["payee"]
    assert {"new_device", "new_place", "straight_to_sensitive"} <= set(alert["signals"])


def test_the_customer_s_own_next_session_is_unaffected(
    make_engine: Callable[..., Engine],
) -> None:
    attacked, spared = make_engine("memory"), make_engine("memory")
    for engine in (attacked, spared):
        send(engine, history())
    send(attacked, takeover(T0 - DAY))
    later = EVENING - DAY + 3600  # the next evening, at home, hours after the takeover
    for engine in (attacked, spared):
        send(engine, own_session(later))
    a = attacked.decide(
        DecisionRequest(placement="home_feed"), user_id=USER, choose=greedy, now=None
    )
    b = spared.decide(DecisionRequest(placement="home_feed"), user_id=USER, choose=greedy)
    assert "was_this_you" not in [i.offer_id for i in a.items]
    assert Suppression.SECURITY not in {e.why for e in a.excluded}
    assert [i.offer_id for i in a.items] == [i.offer_id for i in b.items]
    assert len(fraud_alerts(attacked)) == 1
    assert fraud_alerts(spared) == []
    profile = attacked.profile(USER)
    assert profile is not None
    assert profile.guard is not None
    assert "fraud-dev" not in profile.guard.baseline.devices  # the flagged session taught nothing


def test_without_personalization_consent_the_guard_still_protects(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine("memory")
    no = on(
        HOME,
        identify(
            {"consent": {"personalization": False}}, at=EVENING - 31 * DAY, user=USER, anon="home"
        ),
    )
    send(engine, [no, *history()])
    send(engine, takeover(T0 - 300))
    d = feed(engine, T0)
    assert d.items[0].offer_id == "was_this_you"


def test_with_every_source_withdrawn_the_guard_still_protects_and_never_sells(
    make_engine: Callable[..., Engine],
) -> None:
    """Security is always on (legitimate interest): a customer who withdrew every data
    source and every purpose is still protected; the guard's findings reach the service
    view only: in the commercial view a rule reading them sees them absent."""
    engine = make_engine("memory")
    withdrawn = {
        "personalization": False,
        "marketing": False,
        "sources": dict.fromkeys(
            ("behavioral", "transactional", "crm", "contextual", "third_party"), False
        ),
    }
    no = on(HOME, identify({"consent": withdrawn}, at=EVENING - 31 * DAY, user=USER, anon="home"))
    send(engine, [no, *history()])
    send(engine, takeover(T0 - 300))
    d = feed(engine, T0)
    # the security message first; then only house content that reads nothing of anyone
    assert [i.offer_id for i in d.items] == ["was_this_you", "security_tips"]
    assert all(i.kind.value == "service" for i in d.items)
    catalog = engine.catalog
    profile = engine.profile(USER)
    assert profile is not None
    rule = catalog.offers["was_this_you"].rule  # security.flagged
    reads, sources = catalog.rule_reads, catalog.sources
    for hidden, outcome in (
        (catalog.consent.hidden(profile.consent, profile.grants, View.SERVICE), "true"),
        (catalog.consent.hidden(profile.consent, profile.grants, View.COMMERCIAL), "error"),
    ):
        env = reads.evaluation(
            profile, catalog.topics, T0, {}, reads.masked(hidden, sources.of_path)
        )
        assert env.check(rule).value == outcome


def test_replay_and_restart_rebuild_the_same_baseline(
    make_engine: Callable[..., Engine], tmp_path: Any
) -> None:
    path = tmp_path / "guard.sqlite"
    engine = make_engine("sqlite", path)
    send(engine, history())
    send(engine, takeover(T0 - 2 * DAY))
    send(engine, own_session(EVENING - DAY))
    report = engine.replay()
    assert report.identical, report.differing
    live = engine.profile(USER)
    assert live is not None
    assert live.guard is not None
    assert live.guard.baseline.sessions >= 12
    saved = msgspec.msgpack.encode(live.guard)
    engine.close()
    again = make_engine("sqlite", path)
    restored = again.profile(USER)
    assert restored is not None
    assert msgspec.msgpack.encode(restored.guard) == saved
    rebuilt = again.rebuild()
    assert rebuilt.identical
    assert len(fraud_alerts(again)) == 1  # a replay or a rebuild sends no alert again


def test_a_reload_refolds_when_the_guard_s_settings_change(
    make_engine: Callable[..., Engine], tmp_path: Any
) -> None:
    engine = make_engine("memory")
    send(engine, history())
    for name, edits, refolds in [
        ("threshold", [("threshold: 0.9 ", "threshold: 0.95 ")], True),
        (
            "destination",
            [
                ("threshold: 0.9 ", "threshold: 0.95 "),
                ("alert_destination: fraud", "alert_destination: fraud_desk"),
            ],
            False,
        ),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        catalog = load_catalog(edited_catalog(folder, {"security.yaml": edits}))
        report = engine.reload(catalog)
        assert report.changed
        assert report.refolded is refolds, name
    assert engine.catalog.guard is not None
    assert engine.catalog.guard.alert_destination == "fraud_desk"
    assert engine.replay().identical
