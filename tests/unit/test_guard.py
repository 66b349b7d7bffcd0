"""The identity-theft guard's pure core: what it reads of an event's context, the baseline it
learns from unflagged sessions (bounded), the risk of a session (per-customer likelihood
ratios), the novelty features, the alert; and the catalog's ``security`` section."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.errors import CatalogError
from nextbest.events.model import Event, EventType
from nextbest.guard.alert import FRAUD_CHANNEL, alert_key, fraud_alert
from nextbest.guard.score import NOVELTY_FEATURES, assess, novelty
from nextbest.guard.watch import Guard, SensitiveKind, agent_of, learn, place_of
from nextbest.learn.features import customer_features
from nextbest.profile.baseline import (
    MAX_KNOWN,
    MAX_PACES,
    MAX_SESSION_KNOWN,
    Baseline,
    SessionWatch,
    Signal,
)
from nextbest.profile.fold import FoldConfig, fold
from nextbest.profile.model import Profile
from nextbest.profile.topics import TopicMatcher
from nextbest.rules.context import security_view
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, EXAMPLE_CATALOG, T0

CHROME_DK = {
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/126.0.0.0 Safari/537.36",
    "locale": "da-DK",
    "timezone": "Europe/Copenhagen",
}
FIREFOX_PH = {
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "locale": "en-PH",
    "timezone": "Asia/Manila",
}
TIMEOUT = 30 * 60.0
#: midnight UTC of T0's day
MIDNIGHT = T0 - 10 * 3600


def guard(threshold: float = 0.9, min_sessions: int = 3) -> Guard:
    return Guard(
        [
            SensitiveKind("payee", ["*payee*"], ["Payee Added"]),
            SensitiveKind("limit", ["*/limits*"], ["Limit Changed"]),
        ],
        threshold=threshold,
        session_timeout=TIMEOUT,
        min_sessions=min_sessions,
    )


_n = iter(range(1, 10**9))


def event(
    kind: EventType = EventType.PAGE,
    *,
    at: float,
    path: str = "/accounts",
    device: str | None = "home",
    context: dict[str, Any] | None = None,
    name: str | None = None,
) -> Event:
    props = {"url": "https://bank.example" + path} if kind is not EventType.TRACK else {}
    return Event(
        message_id=f"m{next(_n)}",
        type=kind,
        timestamp=at,
        received_at=at,
        user_id="u1",
        anonymous_id=device,
        name=name,
        properties=props,
        context=dict(CHROME_DK if context is None else context),
    )


def customer(sessions: int = 10, hour: float = 19.0) -> Profile:
    """A customer with ``sessions`` daily visits at ``hour`` UTC from their Chrome in
    Copenhagen, folded by a guard; the last one is still being watched."""
    g = guard()
    cfg = FoldConfig(watch=g)
    matcher = TopicMatcher(())
    p = Profile(customer_id="u1", user_id="u1")
    for d in range(sessions):
        start = MIDNIGHT - 30 * DAY + d * DAY + hour * 3600
        for i, path in enumerate(["/", "/accounts", "/accounts/statements", "/savings"]):
            fold(p, event(at=start + i * 40.0, path=path), matcher, cfg)
    return p


def visit(
    p: Profile,
    g: Guard,
    at: float,
    paths: list[str],
    *,
    device: str = "home",
    context: dict[str, Any] | None = None,
    gap: float = 40.0,
) -> SessionWatch:
    cfg = FoldConfig(watch=g)
    matcher = TopicMatcher(())
    for i, path in enumerate(paths):
        fold(p, event(at=at + i * gap, path=path, device=device, context=context), matcher, cfg)
    assert p.guard is not None
    assert p.guard.session is not None
    return p.guard.session


# ------------------------------------------------------------------ what an event says


def test_agent_of_reads_browser_system_and_locale() -> None:
    assert agent_of(CHROME_DK) == "Chrome/Windows da-DK"
    assert agent_of(FIREFOX_PH) == "Firefox/Linux en-PH"
    edge = {"userAgent": "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0 Safari/537.36 Edg/126.0"}
    assert agent_of(edge) == "Edge/Windows"
    app = {"app": {"name": "Bank"}, "os": {"name": "iOS"}, "device": {"model": "iPhone15,2"}}
    assert agent_of(app) == "app/iOS/iPhone15,2"
    assert agent_of({"library": {"name": "core"}}) is None
    assert agent_of({"userAgent": "curl/8.0"}) == "other/other"


def test_place_of_prefers_the_country_then_the_time_zone() -> None:
    assert place_of({"location": {"country": "dk"}, "timezone": "Europe/Copenhagen"}) == (
        "country:DK"
    )
    assert place_of({"timezone": "Europe/Copenhagen"}) == "tz:Europe/Copenhagen"
    assert place_of({"location": {"city": "Aarhus"}}) is None
    assert place_of({"timezone": "x" * 500}) == "tz:" + "x" * 64


# ------------------------------------------------------------------ the baseline


def test_a_baseline_is_learned_from_ended_sessions() -> None:
    p = customer(sessions=10)
    assert p.guard is not None
    b = p.guard.baseline
    assert b.sessions == 9  # the tenth is still watched
    assert b.devices == ("home",)
    assert b.agents == ("Chrome/Windows da-DK",)
    assert b.places == ("tz:Europe/Copenhagen",)
    assert (b.new_devices, b.new_agents, b.new_places) == (0, 0, 0)
    assert sum(b.hours) == 9
    assert b.hours[19] == 9
    assert len(b.paces) == 9
    assert b.sensitive == {}


def test_anonymous_and_server_side_events_are_not_watched() -> None:
    g = guard()
    cfg = FoldConfig(watch=g)
    anon = Profile(customer_id="anon:a1")
    fold(anon, event(at=T0), TopicMatcher(()), cfg)
    assert anon.guard is None
    known = Profile(customer_id="u1", user_id="u1")
    fold(
        known,
        event(EventType.TRACK, at=T0, device=None, name="Statement Downloaded"),
        TopicMatcher(()),
        cfg,
    )
    g.observe(known, event(EventType.TRACK, at=T0, name="Promotion Viewed"))  # feedback
    assert known.guard is None


def test_a_flagged_session_teaches_the_baseline_nothing() -> None:
    g = guard()
    p = customer(sessions=10)
    assert p.guard is not None
    before = msgspec.msgpack.encode(p.guard.baseline)
    s = visit(p, g, T0, ["/login", "/payees/new", "/cards/limits"], device="x", context=FIREFOX_PH)
    assert s.flagged
    learned = p.guard.baseline.sessions
    visit(p, g, T0 + DAY, ["/", "/accounts"])  # the next session ends the flagged one
    b = p.guard.baseline
    assert b.sessions == learned  # the flagged session was not learned
    assert "x" not in b.devices
    assert "Firefox/Linux en-PH" not in b.agents
    assert msgspec.msgpack.encode(b) != before  # only the session before it was learned


def test_a_baseline_stays_bounded_whatever_comes() -> None:
    rng = random.Random(7)
    g = guard(threshold=0.999999)
    p = customer(sessions=4)
    at = T0
    for _ in range(300):
        at += rng.choice([60.0, 3 * 3600.0])
        ctx = {
            "userAgent": f"Mozilla/5.0 Agent{rng.randrange(50)}",
            "locale": f"l{rng.randrange(50)}",
            "timezone": f"Zone/{rng.randrange(50)}",
        }
        path = rng.choice(["/", "/payees/x", "/cards/limits", "/a"])
        visit(p, g, at, [path], device=f"d{rng.randrange(100)}", context=ctx)
    assert p.guard is not None
    b, s = p.guard.baseline, p.guard.session
    assert s is not None
    assert len(b.devices) <= MAX_KNOWN
    assert len(b.agents) <= MAX_KNOWN
    assert len(b.places) <= MAX_KNOWN
    assert len(b.paces) <= MAX_PACES
    assert len(b.hours) == 24
    assert set(b.sensitive) <= {"payee", "limit"}
    assert max(len(s.devices), len(s.agents), len(s.places)) <= MAX_SESSION_KNOWN


def test_the_most_recent_devices_are_kept() -> None:
    b = Baseline()
    for i in range(MAX_KNOWN + 3):
        learn(
            b,
            SessionWatch(
                started=T0 + i * DAY, last_seen=T0 + i * DAY, expires=0.0, devices=(f"d{i}",)
            ),
        )
    assert b.devices == tuple(f"d{i}" for i in range(3, MAX_KNOWN + 3))
    learn(
        b,
        SessionWatch(started=T0 + 20 * DAY, last_seen=T0 + 20 * DAY, expires=0.0, devices=("d3",)),
    )
    assert b.devices[-1] == "d3"
    assert b.new_devices == MAX_KNOWN + 2  # the first session's device is not counted new


# ------------------------------------------------------------------ the risk


def test_no_judgement_before_min_sessions() -> None:
    g = guard(min_sessions=3)
    p = customer(sessions=2)  # two learned once the next session starts
    s = visit(p, g, T0, ["/login", "/payees/new"], device="x", context=FIREFOX_PH)
    assert (s.risk, s.signals, s.flagged) == (0.0, (), False)


def test_new_device_new_place_straight_to_payee_is_flagged() -> None:
    g = guard()
    p = customer()
    s = visit(
        p, g, T0, ["/login", "/payees/new", "/cards/limits"], device="x", context=FIREFOX_PH, gap=8
    )
    assert s.flagged
    assert s.flagged_step == 2  # at the payee page
    assert s.flagged_at == T0 + 8
    assert s.risk > 0.99
    assert {
        Signal.NEW_DEVICE,
        Signal.NEW_AGENT,
        Signal.NEW_PLACE,
        Signal.SENSITIVE,
        Signal.STRAIGHT_TO_SENSITIVE,
    } <= set(s.signals)
    assert s.kinds == ("payee", "limit")


def test_the_customer_s_own_session_is_not() -> None:
    g = guard()
    p = customer()
    s = visit(p, g, MIDNIGHT - 10 * DAY + 19 * 3600, ["/", "/accounts", "/savings"])
    assert not s.flagged
    assert s.risk < 0.001
    assert s.signals == ()


def test_the_customer_adding_a_payee_from_home_is_not() -> None:
    g = guard()
    p = customer()
    s = visit(p, g, MIDNIGHT - 10 * DAY + 19 * 3600, ["/", "/accounts", "/payees/new"])
    assert not s.flagged
    assert Signal.SENSITIVE in s.signals
    assert s.risk < 0.5


def test_the_risk_only_rises_within_a_session() -> None:
    g = guard(threshold=0.999999)
    p = customer()
    cfg = FoldConfig(watch=g)
    risks = []
    for i, path in enumerate(["/login", "/", "/accounts", "/payees/new", "/cards/limits"]):
        fold(
            p,
            event(at=T0 + i * 30, path=path, device="x", context=FIREFOX_PH),
            TopicMatcher(()),
            cfg,
        )
        assert p.guard is not None
        assert p.guard.session is not None
        risks.append(p.guard.session.risk)
    assert risks == sorted(risks)
    assert risks[-1] > risks[0]


def test_a_customer_who_often_adds_payees_counts_one_less() -> None:
    g = guard(threshold=0.999999)
    rare, usual = customer(), customer()
    assert usual.guard is not None
    usual.guard.baseline.sensitive["payee"] = usual.guard.baseline.sessions  # every session
    args = (T0, ["/login", "/payees/new"])
    a = visit(rare, g, *args, device="x", context=FIREFOX_PH)
    b = visit(usual, g, *args, device="x", context=FIREFOX_PH)
    assert a.risk > b.risk


def test_a_customer_who_often_changes_device_counts_a_new_one_less() -> None:
    b = Baseline(sessions=20, devices=("home",), hours=(1,) * 24)
    s = SessionWatch(started=T0, last_seen=T0, expires=T0, devices=("new",), steps=1)
    steady, _ = assess(b, s, 3)
    b.new_devices = 15
    changing, _ = assess(b, s, 3)
    assert changing < steady


def test_the_same_place_and_agent_are_evidence_for_the_customer() -> None:
    g = guard(threshold=0.999999)
    far, near = customer(), customer()
    a = visit(far, g, T0, ["/login", "/payees/new"], device="x", context=FIREFOX_PH)
    b = visit(near, g, T0, ["/login", "/payees/new"], device="x", context=CHROME_DK)
    assert a.risk > b.risk
    assert Signal.NEW_PLACE not in b.signals
    assert Signal.NEW_AGENT not in b.signals


def test_an_event_from_long_before_the_session_is_skipped() -> None:
    g = guard()
    p = customer()
    assert p.guard is not None
    s = p.guard.session
    assert s is not None
    steps = s.steps
    visit(p, g, s.started - 2 * TIMEOUT, ["/payees/new"], device="old")
    assert p.guard.session is s
    assert s.steps == steps
    assert s.kinds == ()


def test_novelty_features_are_in_the_unit_interval() -> None:
    rng = random.Random(3)
    g = guard(threshold=0.999999)
    p = customer()
    for _ in range(200):
        ctx = rng.choice([CHROME_DK, FIREFOX_PH, {}])
        path = rng.choice(["/", "/payees/x", "/cards/limits"])
        s = visit(
            p, g, T0 + rng.uniform(0, 20 * DAY), [path], device=rng.choice("abc"), context=ctx
        )
        assert p.guard is not None
        x = novelty(p.guard.baseline, s)
        assert tuple(x) == NOVELTY_FEATURES
        assert all(0.0 <= v <= 1.0 for v in x.values()), x


def test_skipping_unmoved_risks_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard recomputes a session's risk only when the session brought something or its
    pace counts: the same state as recomputing it at every step the pace could move it."""

    def folded() -> bytes:
        rng = random.Random(11)
        g = guard(threshold=0.99)
        p = customer()
        at = T0
        for _ in range(400):
            at += rng.choice([5.0, 20.0, 90.0, 3 * 3600.0])
            ctx = rng.choice([CHROME_DK, FIREFOX_PH, {"timezone": "Europe/Oslo"}, {}])
            path = rng.choice(["/", "/accounts", "/payees/x", "/cards/limits", "/savings"])
            visit(p, g, at, [path], device=rng.choice(["home", "home", "x", "y"]), context=ctx)
        return msgspec.msgpack.encode(p)

    lazy = folded()
    monkeypatch.setattr("nextbest.guard.watch.pace_counts", lambda b, s: True)
    assert folded() == lazy


def test_the_fold_is_deterministic() -> None:
    a, b = customer(), customer()
    assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


# ------------------------------------------------------------------ what rules see, the alert


def test_security_view_is_the_live_session_only() -> None:
    g = guard()
    p = customer()
    s = visit(p, g, T0, ["/login", "/payees/new"], device="x", context=FIREFOX_PH)
    view = security_view(p, T0 + 60)
    assert view["flagged"] is True
    assert view["risk"] == s.risk
    assert "new_device" in view["signals"]
    assert security_view(p, s.expires + 1) == {"risk": 0.0, "flagged": False, "signals": []}
    assert security_view(Profile(customer_id="u2"), T0) == {
        "risk": 0.0,
        "flagged": False,
        "signals": [],
    }


def test_an_alert_key_is_one_per_session() -> None:
    s = SessionWatch(started=T0, last_seen=T0, expires=T0, flagged_step=2, flagged_at=T0 + 8)
    key = alert_key("u1", s)
    assert key == alert_key("u1", msgspec.structs.replace(s, risk=0.5, steps=9))
    assert key != alert_key("u2", s)
    assert key != alert_key("u1", msgspec.structs.replace(s, started=T0 + 1))
    assert key.startswith("guard-")
    assert "u1" not in key
    alert = fraud_alert("u1", s, 0.9, "1+abc")
    body = msgspec.json.decode(msgspec.json.encode(alert))
    assert body["type"] == "identity_theft_suspected"
    assert body["steps_to_flag"] == 2
    assert body["seconds_to_flag"] == 8.0
    assert FRAUD_CHANNEL == "fraud"


def test_the_guard_feeds_no_learning_feature() -> None:
    """The security purpose is never used to sell: a model's features are the same with the
    guard's state as without it."""
    p = customer()
    assert p.guard is not None
    bare = msgspec.structs.replace(p, guard=None)
    catalog = load_catalog(EXAMPLE_CATALOG)
    now = T0
    assert customer_features(p, catalog.topics, now, {}) == customer_features(
        bare, catalog.topics, now, {}
    )


# ------------------------------------------------------------------ the catalog


def _bank(tmp_path: Path, offers: str = "", security: str | None = None) -> Path:
    import shutil

    folder = tmp_path / "bank"
    shutil.copytree(EXAMPLE_CATALOG, folder)
    if security is None:
        (folder / "security.yaml").unlink()
    else:
        (folder / "security.yaml").write_text(security)
    if offers:
        (folder / "zz_offers.yaml").write_text(offers)
    return folder


def _problems(folder: Path) -> list[tuple[str, str]]:
    with pytest.raises(CatalogError) as info:
        load_catalog(folder)
    return [(p.path, p.reason) for p in info.value.problems if p.is_error]


def test_the_example_bank_has_a_guard() -> None:
    catalog: Catalog = load_catalog(EXAMPLE_CATALOG)
    g = catalog.guard
    assert g is not None
    assert catalog.fold_config.watch is g
    assert [k.kind for k in g.sensitive] == ["payee", "limit", "contact"]
    assert g.alert_destination == "fraud"


def test_a_commercial_offer_or_a_segment_may_not_read_security(tmp_path: Path) -> None:
    offers = """
offers:
  - id: sell_to_the_flagged
    name: x
    kind: commercial
    eligibility: security.risk > 0.5
    content: {web: {title: x}}
segments:
  - id: risky
    rule: security.flagged
"""
    folder = _bank(tmp_path, offers, security="security: {}\n")
    found = _problems(folder)
    paths = {path for path, _ in found}
    assert paths == {"$.offers[20].eligibility", "$.segments[6].rule"}
    assert all("never used to sell" in reason for _, reason in found)


def test_reading_security_without_the_section_is_an_error(tmp_path: Path) -> None:
    folder = _bank(tmp_path)  # the example bank's was_this_you reads security.flagged
    found = _problems(folder)
    assert found == [
        (
            "$.offers[16].eligibility",
            "security.* reads the identity-theft guard, which is off: add a security section "
            "(docs/catalog.md)",
        )
    ]


def test_sensitive_kinds_are_checked(tmp_path: Path) -> None:
    security = """
security:
  sensitive:
    - {kind: payee, url_patterns: ["*payee*"]}
    - {kind: payee, events: [Payee Added]}
    - {kind: nothing}
  threshold: 0.95
"""
    found = _problems(_bank(tmp_path, security=security))
    assert (
        "$.security.sensitive[1].kind",
        "duplicate kind 'payee' (first at $.security.sensitive[0])",
    ) in found
    assert (
        "$.security.sensitive[2]",
        "names no url_patterns and no events: it matches nothing",
    ) in found


def test_a_threshold_out_of_range_is_an_error(tmp_path: Path) -> None:
    found = _problems(_bank(tmp_path, security="security: {threshold: 1.5}\n"))
    assert [path for path, _ in found] == ["$.security.threshold"]


def test_the_guard_s_settings_refold_on_reload() -> None:
    a = guard(threshold=0.9)
    assert a == guard(threshold=0.9)
    assert a != guard(threshold=0.95)
    assert FoldConfig(watch=a) == FoldConfig(watch=guard(threshold=0.9))
