"""What nextbest knows about a customer, where it came from and what it is used for, in the
customer's language (``GET /v1/me/data``). Pure: a profile, the catalog and ``now`` in.

The page is grouped by data source (``profile.consent.DataSource``): each source says what it
is, the purposes the customer's consent lets it serve (and those it does not), and each fact
nextbest keeps from it in plain words, with the feature it is (``interest.mortgage``) so the
bank's staff can find it. The consent choices follow, each with its legal basis, time and
origin; then what the bank showed the customer (its own contact history, kept to respect
contact caps), and what the identity-theft guard knows (read for security alone).
"""

from __future__ import annotations

import datetime as dt

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.profile.consent import ConsentGrant, DataSource, Purpose
from nextbest.profile.model import FunnelStage, Profile
from nextbest.profile.windows import count_in_days
from nextbest.transparency.texts import TEXTS, say

__all__ = ["ConsentChoice", "DataFact", "MyData", "SourceSection", "my_data"]

#: the purposes a source may serve, in the order the page lists them
_PURPOSES = (
    Purpose.PERSONALIZATION,
    Purpose.MARKETING,
    Purpose.ANALYTICS,
    Purpose.ADVISOR_CONTACT,
    Purpose.SECURITY,
)
#: traits never shown back as such (they are credentials or identifiers, not facts)
_HIDDEN_TRAITS = frozenset({"consent", "password", "token"})
_DAY = 86_400.0


class DataFact(msgspec.Struct, frozen=True, kw_only=True):
    """One thing nextbest keeps, in words, and the feature it is."""

    text: str
    feature: str


class SourceSection(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    name: str
    about: str
    #: the purposes this source serves for the customer now, in words
    used_for: list[str]
    #: the purposes the customer did not allow it for
    not_used_for: list[str]
    facts: list[DataFact]


class ConsentChoice(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    text: str
    granted: bool
    basis: str
    at: str | None
    origin: str


class MyData(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    language: str
    title: str
    sources: list[SourceSection]
    consent: list[ConsentChoice]
    #: what the bank showed the customer (its contact history)
    shown: list[DataFact]
    #: what the identity-theft guard knows, for security alone (None: nothing)
    security: DataFact | None


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def _behavioral(profile: Profile, catalog: Catalog, now: float, lang: str) -> list[DataFact]:
    facts: list[DataFact] = []
    for topic, it in sorted(profile.interests.items()):
        spec = catalog.topics.get(topic)
        if spec is None or it.total == 0:
            continue
        count = count_in_days(it.hits, 30, now) or it.total
        text = say("data.interest", lang, topic=spec.name, count=count, date=_date(it.last_seen))
        facts.append(DataFact(text=text, feature=f"interest.{topic}"))
    for topic, stage in sorted(profile.funnel.items()):
        spec = catalog.topics.get(topic)
        if spec is None or stage is FunnelStage.NONE:
            continue
        label = say(f"stage.{stage.label}", lang)
        facts.append(
            DataFact(
                text=say("data.funnel", lang, topic=spec.name, stage=label),
                feature=f"profile.funnel.{topic}",
            )
        )
    if profile.event_count:
        text = say(
            "data.activity",
            lang,
            count=profile.event_count,
            date=_date(profile.first_seen),
            last=_date(profile.last_seen),
        )
        facts.append(DataFact(text=text, feature="profile.events"))
    return facts


def _transactional(profile: Profile, lang: str) -> list[DataFact]:
    facts: list[DataFact] = []
    if profile.balance is not None:
        text = say("data.balance", lang, balance=f"{profile.balance:,.2f}")
        facts.append(DataFact(text=text, feature="profile.balance"))
    if profile.overdrawn:
        facts.append(DataFact(text=say("data.overdrawn", lang), feature="profile.overdrawn"))
    return facts


def _traits(profile: Profile, catalog: Catalog, source: str, lang: str) -> list[DataFact]:
    facts = []
    for name, value in sorted(profile.traits.items()):
        if name in _HIDDEN_TRAITS or catalog.sources.trait(name) != source:
            continue
        plain = isinstance(value, str | int | float | bool)
        shown = value if plain else msgspec.json.encode(value).decode()
        text = say("data.trait", lang, name=name, value=shown)
        facts.append(DataFact(text=text, feature=f"traits.{name}"))
    return facts


def _facts(profile: Profile, catalog: Catalog, now: float, lang: str) -> dict[str, list[DataFact]]:
    out: dict[str, list[DataFact]] = {s.value: [] for s in DataSource}
    out[DataSource.BEHAVIORAL].extend(_behavioral(profile, catalog, now, lang))
    out[DataSource.TRANSACTIONAL].extend(_transactional(profile, lang))
    if profile.products:
        text = say("data.products", lang, products=", ".join(sorted(profile.products)))
        out[catalog.sources.trait("products")].append(DataFact(text=text, feature="products"))
    for source in DataSource:
        out[source].extend(_traits(profile, catalog, source.value, lang))
    return out


def _consent(profile: Profile, lang: str) -> list[ConsentChoice]:
    out = []
    for key, grant in sorted(profile.grants.items()):
        purpose, _, source = key.partition("/")
        out.append(_choice(key, purpose, source or None, grant, lang))
    for purpose, granted in sorted(profile.consent.items()):
        if purpose not in profile.grants:
            out.append(_choice(purpose, purpose, None, ConsentGrant(granted=granted), lang))
    return out


def _choice(
    key: str, purpose: str, source: str | None, grant: ConsentGrant, lang: str
) -> ConsentChoice:
    purposes = [p.value for p in _PURPOSES] if purpose == "*" else [purpose]
    what = ", ".join(say(f"purpose.{p}", lang) for p in purposes if f"purpose.{p}" in TEXTS)
    where = say(f"source.{source}", lang) if source else "*"
    key_text = "data.consent.granted" if grant.granted else "data.consent.refused"
    return ConsentChoice(
        key=key,
        text=say(key_text, lang, source=where, purpose=what),
        granted=grant.granted,
        basis=say(f"basis.{grant.basis.value}", lang),
        at=dt.datetime.fromtimestamp(grant.at, dt.UTC).isoformat() if grant.at else None,
        origin=grant.origin,
    )


def my_data(profile: Profile, catalog: Catalog, now: float, language: str) -> MyData:
    """The customer's page, in ``language``."""
    rules = catalog.consent
    facts = _facts(profile, catalog, now, language)
    sections = []
    for source in DataSource:
        used: list[str] = []
        unused: list[str] = []
        for purpose in _PURPOSES:
            on = rules.allowed(profile.consent, profile.grants, purpose.value, source.value)
            (used if on else unused).append(say(f"purpose.{purpose.value}", language))
        sections.append(
            SourceSection(
                source=source.value,
                name=say(f"source.{source.value}", language),
                about=say(f"source.{source.value}.about", language),
                used_for=used,
                not_used_for=unused,
                facts=facts[source.value],
            )
        )
    shown = []
    for offer_id, history in sorted(profile.offers.items()):
        offer = catalog.offers.get(offer_id)
        if offer is None or not history.total_impressions:
            continue
        text = say(
            "data.offer",
            language,
            name=offer.spec.name,
            count=history.total_impressions,
            clicks=history.total_clicks,
        )
        shown.append(DataFact(text=text, feature=f"offers.{offer_id}"))
    security = None
    guard = profile.guard
    if guard is not None and guard.baseline.sessions:
        b = guard.baseline
        text = say("data.security", language, devices=len(b.devices), places=len(b.places))
        security = DataFact(text=text, feature="security.baseline")
    return MyData(
        customer_id=profile.customer_id,
        language=language,
        title=say("data.title", language),
        sources=sections,
        consent=_consent(profile, language),
        shown=shown,
        security=security,
    )
