"""Consent per purpose and data source: how a choice resolves, how events set it, and that
profiles encoded before grants existed still load."""

from __future__ import annotations

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.errors import CatalogError
from nextbest.events import parse_batch
from nextbest.profile import fold
from nextbest.profile.consent import (
    SECURITY_DATA,
    ConsentGrant,
    ConsentRules,
    ConsentSpec,
    DataSource,
    LegalBasis,
    Purpose,
    View,
    apply_consent,
    consent_problems,
    consent_state,
)
from nextbest.profile.model import Profile
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, T0, batch, edited_bank, identify, page, track

RULES = ConsentRules(ConsentSpec(), {"personalization": True, "marketing": True})
EVERY = frozenset(s.value for s in DataSource)


def folded(catalog: Catalog, *messages: dict) -> Profile:
    profile = Profile(customer_id="u1", user_id="u1")
    for event in parse_batch(batch(*messages), T0 + 365 * DAY):
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


def grants(payload: object) -> tuple[dict[str, bool], dict[str, ConsentGrant]]:
    consent: dict[str, bool] = {}
    out: dict[str, ConsentGrant] = {}
    apply_consent(consent, out, payload, at=T0, origin="test")
    return consent, out


def test_defaults_third_party_off_everything_else_on():
    for purpose in ("personalization", "marketing"):
        for source in DataSource:
            expected = source is not DataSource.THIRD_PARTY
            assert RULES.allowed({}, {}, purpose, source) is expected
    # a purpose without a default is off until the customer grants it
    assert RULES.allowed({}, {}, "advisor_contact", "crm") is False
    # but analytics (the bank measuring its own campaigns: legitimate interest) is opt-out
    assert RULES.allowed({}, {}, "analytics", "crm") is True
    assert RULES.allowed({"analytics": False}, {}, "analytics", "crm") is False
    strict = ConsentRules(ConsentSpec(), {"analytics": False})
    assert strict.allowed({}, {}, "analytics", "crm") is False


def test_security_is_always_on_and_cannot_be_switched_off():
    consent, g = grants({"security": False, "sources": {"behavioral": False}})
    assert "security" not in consent
    for source in DataSource:
        assert RULES.allowed({"security": False}, g, Purpose.SECURITY, source)


def test_the_most_specific_choice_wins_on_the_source_axis():
    consent, g = grants(
        {
            "sources": {"transactional": False, "third_party": True},
            "marketing": {"granted": True, "sources": {"transactional": True}},
        }
    )
    # purpose/source beats */source
    assert RULES.allowed(consent, g, "marketing", "transactional")
    assert not RULES.allowed(consent, g, "personalization", "transactional")
    # the customer's */source beats the catalog's per-source default
    assert RULES.allowed(consent, g, "personalization", "third_party")


def test_a_purpose_switched_off_switches_off_every_source():
    consent, g = grants({"marketing": False, "sources": {"crm": True}})
    assert not any(RULES.allowed(consent, g, "marketing", s) for s in DataSource)
    assert RULES.allowed(consent, g, "personalization", "crm")


def test_catalog_defaults_per_purpose_and_source():
    spec = ConsentSpec(
        sources={DataSource.THIRD_PARTY: False, DataSource.TRANSACTIONAL: True},
        purposes={Purpose.MARKETING: {DataSource.TRANSACTIONAL: False}},
    )
    rules = ConsentRules(spec, {"personalization": True, "marketing": True})
    assert not rules.allowed({}, {}, "marketing", "transactional")
    assert rules.allowed({}, {}, "personalization", "transactional")
    # the customer's own choice beats the catalog
    _, g = grants({"marketing": {"sources": {"transactional": True}}})
    assert rules.allowed({}, g, "marketing", "transactional")


def test_views_hide_what_their_purposes_do_not_allow():
    assert RULES.hidden({}, {}, View.SERVICE) == {"third_party"}
    assert RULES.hidden({}, {}, View.COMMERCIAL) == {"third_party", SECURITY_DATA}
    consent, g = grants({"marketing": False})
    assert RULES.hidden(consent, g, View.COMMERCIAL) == EVERY | {SECURITY_DATA}
    assert RULES.hidden(consent, g, View.SERVICE) == {"third_party"}
    # without personalization, service messages read the contract sources only
    consent, g = grants({"personalization": False})
    assert RULES.hidden(consent, g, View.SERVICE) == {"behavioral", "third_party"}
    # a source withdrawn is hidden from both views, contract or not
    consent, g = grants({"sources": {"transactional": False}})
    assert "transactional" in RULES.hidden(consent, g, View.SERVICE)
    assert "transactional" in RULES.hidden(consent, g, View.COMMERCIAL)
    consent, g = grants({"marketing": {"sources": {"transactional": False}}})
    assert "transactional" in RULES.hidden(consent, g, View.COMMERCIAL)
    assert "transactional" not in RULES.hidden(consent, g, View.SERVICE)


def test_grants_keep_basis_time_and_origin():
    _, g = grants(
        {
            "marketing": {"granted": True, "basis": "legitimate_interest"},
            "personalization": False,
        }
    )
    assert g["marketing"] == ConsentGrant(
        granted=True, basis=LegalBasis.LEGITIMATE_INTEREST, at=T0, origin="test"
    )
    assert g["personalization"].basis is LegalBasis.CONSENT


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({}, "$"),
        ([], "$"),
        ({"marketting": True}, "$.marketting"),
        ({"security": False}, "$.security"),
        ({"marketing": 1}, "$.marketing"),
        ({"marketing": {"granted": "yes"}}, "$.marketing.granted"),
        ({"marketing": {"basis": "whim", "granted": True}}, "$.marketing.basis"),
        ({"marketing": {"sources": {"web": True}}}, "$.marketing.sources.web"),
        ({"marketing": {"colour": 1, "granted": True}}, "$.marketing.colour"),
        ({"marketing": {"basis": "consent"}}, "$.marketing"),
        ({"sources": {"crm": None}}, "$.sources.crm"),
        ({"sources": []}, "$.sources"),
    ],
)
def test_problems_name_the_field(payload, path):
    problems = consent_problems(payload)
    assert problems
    assert problems[0][0] == path


def test_events_set_consent_with_origin_and_time(catalog: Catalog):
    p = folded(
        catalog,
        identify({"consent": {"marketing": True, "sources": {"third_party": True}}}, user="u1"),
        track(
            "Consent Updated",
            {
                "purposes": {"marketing": {"granted": False, "sources": {"crm": False}}},
                "origin": "branch",
                "basis": "consent",
            },
            user="u1",
            at=T0 + 60,
        ),
    )
    assert p.consent == {"marketing": False}
    assert p.grants["*/third_party"].origin == "identify"
    assert p.grants["marketing"].origin == "branch"
    assert p.grants["marketing"].at == T0 + 60
    assert p.grants["marketing/crm"].granted is False
    assert consent_state(p.consent, p.grants) == {
        "marketing": False,
        "marketing/crm": False,
        "*/third_party": True,
    }


def test_a_profile_encoded_before_grants_still_loads():
    """Snapshots, Redis and SQLite state hold msgpack/JSON profiles without ``grants``."""

    class OldProfile(msgspec.Struct, kw_only=True):
        customer_id: str
        consent: dict[str, bool] = {}

    for encode, decode in (
        (msgspec.msgpack.encode, msgspec.msgpack.decode),
        (msgspec.json.encode, msgspec.json.decode),
    ):
        old = encode(OldProfile(customer_id="u1", consent={"marketing": False}))
        p = decode(old, type=Profile)
        assert p.grants == {}
        assert p.consent == {"marketing": False}
        assert not RULES.allowed(p.consent, p.grants, "marketing", "crm")
        assert RULES.allowed(p.consent, p.grants, "personalization", "crm")


def test_check_warns_of_a_topic_event_that_is_not_behaviour(tmp_path):
    folder = edited_bank(
        tmp_path,
        "topics.yaml",
        'url_patterns: ["/help/overdraft*"]',
        'url_patterns: ["/help/overdraft*"]\n    events: [Overdraft Started]',
    )
    (warning,) = load_catalog(folder).warnings
    assert warning.path == "$.topics[6].events[0]"
    assert "transactional, not behaviour" in warning.reason
    assert str(warning).startswith(f"{folder / 'topics.yaml'}:44:")


def test_check_refuses_an_unknown_source_at_its_line(tmp_path):
    folder = edited_bank(
        tmp_path, "policy.yaml", "sources: {third_party: false}", "sources: {bureau: false}"
    )
    with pytest.raises(CatalogError) as exc:
        load_catalog(folder)
    (problem,) = exc.value.problems
    assert problem.path.startswith("$.consent.sources")
    assert str(problem).startswith(f"{folder / 'policy.yaml'}:")


def test_the_newest_choice_wins_whatever_the_fold_order(catalog: Catalog):
    newer = track("Consent Updated", {"purposes": {"marketing": False}}, user="u1", at=T0)
    older = track("Consent Updated", {"purposes": {"marketing": True}}, user="u1", at=T0 - DAY)
    for order in ((older, newer), (newer, older)):
        p = folded(catalog, *order)
        assert p.consent == {"marketing": False}
        assert p.grants["marketing"].at == T0


# ------------------------------------------------------------------ activity per source
def test_activity_counters_are_split_by_the_source_of_each_event(catalog: Catalog) -> None:
    p = folded(
        catalog,
        page("https://bank.example/mortgages/rates", user="u1", at=T0 - 3 * DAY),
        track("Transaction Posted", {"amount": -5.0, "balance": 90.0}, user="u1", at=T0 - DAY),
        identify({"balance": 90.0, "age": 40}, user="u1", at=T0 - DAY + 60),
        identify({"consent": {"marketing": True}}, user="u1", at=T0 - 10),
    )
    assert p.by_source is not None
    assert {k: (s.events, s.sessions) for k, s in p.by_source.items()} == {
        "behavioral": (2, 1),  # the page, and an identify carrying no data trait
        "transactional": (1, 1),
        "crm+transactional": (1, 0),  # an identify is no session
    }
    assert (p.event_count, p.sessions) == (4, 2)
    no_tx = catalog.sources.masked(p, frozenset({"transactional"}))
    assert (no_tx.event_count, no_tx.sessions, no_tx.activity) == (2, 1, [T0 - 3 * DAY, T0 - 10])
    no_web = catalog.sources.masked(p, frozenset({"behavioral"}))
    assert (no_web.event_count, no_web.sessions) == (2, 1)
    assert no_web.activity == [T0 - DAY, T0 - DAY + 60]
    assert catalog.sources.masked(p, frozenset({"crm"})).event_count == 3
    assert catalog.sources.masked(p, frozenset()) is p


def test_a_profile_saved_before_the_split_loads_and_keeps_its_counts_whole(
    catalog: Catalog,
) -> None:
    """An old profile (no ``by_source``) decodes; its counts, of unknown sources, show only
    where no event source is hidden (as before); events folded after it count per source."""
    p = folded(catalog, page("https://bank.example/about", user="u1", at=T0 - DAY))
    old = msgspec.to_builtins(p)
    del old["by_source"]
    loaded = msgspec.msgpack.Decoder(Profile).decode(msgspec.msgpack.encode(old))
    assert loaded.by_source is None
    assert loaded.event_count == 1
    hidden = frozenset({"transactional"})
    assert catalog.sources.masked(loaded, hidden).event_count == 0
    for event in parse_batch(
        batch(page("https://bank.example/about", user="u1", at=T0 - 10)), T0 + DAY
    ):
        fold(loaded, event, catalog.matcher, catalog.fold_config)
    assert loaded.by_source is not None
    assert loaded.by_source["*"].events == 1
    view = catalog.sources.masked(loaded, hidden)
    assert (view.event_count, view.sessions, view.activity) == (1, 1, [T0 - 10])
    assert catalog.sources.masked(loaded, frozenset()).event_count == 2
    again = msgspec.msgpack.Decoder(Profile).decode(msgspec.msgpack.encode(loaded))
    assert again == loaded
