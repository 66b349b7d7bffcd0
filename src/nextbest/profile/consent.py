"""Consent per purpose and per data source: what a customer allows, on which legal basis,
since when and set by whom; and how the effective permission resolves.

Two independent axes, both must allow a use (``ConsentRules.allowed``):

* the **purpose** (``Purpose``): personalization, marketing, analytics, advisor_contact are
  switched on or off as a whole (the customer's grant, else the catalog's purpose default,
  ``contact_policy.consent_defaults``, else ``BUILT_IN_DEFAULTS``: analytics on, else off);
  ``security`` is always on (legal basis
  legitimate interest: catching an identity thief) and is never used to sell;
* the **data source** (``DataSource``) for that purpose, the most specific first: the
  customer's grant for the purpose and source (``marketing/transactional``), the customer's
  grant for the source under every purpose (``*/transactional``), the catalog's default for
  the purpose and source, the catalog's default for the source, else allowed.

A grant (``ConsentGrant``) keeps its legal basis, the event time it was set at and its origin
(``identify``, ``event``, ``api``). Profiles keep purpose-level booleans in
``Profile.consent`` (what rules read as ``profile.consent.<purpose>``, and what profiles
encoded before grants existed hold) and every grant in ``Profile.grants``, keyed as above.

Pure code: no I/O, no clock (times are the events').
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "ALL_PURPOSES",
    "ANALYTICS_OFF",
    "BUILT_IN_DEFAULTS",
    "EVENT_SOURCES",
    "SECURITY_DATA",
    "ConsentGrant",
    "ConsentRules",
    "ConsentSpec",
    "DataSource",
    "LegalBasis",
    "Purpose",
    "View",
    "apply_consent",
    "consent_problems",
    "consent_state",
    "grant_key",
]


class Purpose(enum.StrEnum):
    """What data is used for."""

    PERSONALIZATION = "personalization"
    MARKETING = "marketing"
    ANALYTICS = "analytics"
    SECURITY = "security"
    ADVISOR_CONTACT = "advisor_contact"


class DataSource(enum.StrEnum):
    """Where a profile feature comes from."""

    #: what the customer does on the bank's web site and app (pages, screens, clicks)
    BEHAVIORAL = "behavioral"
    #: core banking: balances, transactions, overdrafts, salary
    TRANSACTIONAL = "transactional"
    #: what the customer told the bank or the bank's customer record holds (age, products,
    #: life events, callbacks)
    CRM = "crm"
    #: the request itself: page, device, time
    CONTEXTUAL = "contextual"
    #: data bought or received from others (credit bureaus, enrichment)
    THIRD_PARTY = "third_party"


class LegalBasis(enum.StrEnum):
    """GDPR art. 6(1) bases."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTEREST = "vital_interest"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTEREST = "legitimate_interest"


class View(enum.StrEnum):
    """Whose view of a profile a decision step reads."""

    #: commercial offers (marketing and personalization), ranking and learning features
    COMMERCIAL = "commercial"
    #: service messages: sources allowed for personalization, and the contract sources
    SERVICE = "service"
    #: experiment measurement: the covariates (CUPED) and audiences frozen at a customer's
    #: first exposure (``experiments.exposure``): sources allowed for analytics
    ANALYTICS = "analytics"


ALL_PURPOSES: tuple[str, ...] = tuple(p.value for p in Purpose)
#: purposes on when neither the customer nor the catalog (``consent_defaults``) says: the
#: measurement of the bank's own campaigns, in aggregates that name nobody (legal basis:
#: legitimate interest, art. 6(1)(f); the customer may object, art. 21: opt-out)
BUILT_IN_DEFAULTS: dict[str, bool] = {"analytics": True}
_SOURCES = frozenset(s.value for s in DataSource)
_BASES = frozenset(b.value for b in LegalBasis)
#: the pseudo-source of the identity-theft guard's findings (``security.*`` in rules): part
#: of the service view (a "Was this you?" message), never of the commercial one
SECURITY_DATA = "security"

#: the built-in source of each known track event; a track event named nowhere is behavioral
#: (sent by the site or app), and the catalog's ``consent.events`` overrides both. None: no
#: customer data source (consent itself, and offer feedback: the bank's own contact history,
#: read for contact caps whatever the customer allows)
EVENT_SOURCES: dict[str, DataSource | None] = {
    "Transaction Posted": DataSource.TRANSACTIONAL,
    "Balance Updated": DataSource.TRANSACTIONAL,
    "Overdraft Started": DataSource.TRANSACTIONAL,
    "Overdraft Ended": DataSource.TRANSACTIONAL,
    "Salary Received": DataSource.TRANSACTIONAL,
    "Product Opened": DataSource.CRM,
    "Product Closed": DataSource.CRM,
    "Application Completed": DataSource.CRM,
    "Life Event": DataSource.CRM,
    # the customer's own word that they reviewed a subscription the bank's insight named
    "Subscription Reviewed": DataSource.CRM,
    "Overdraft Protection Enabled": DataSource.TRANSACTIONAL,
    "Savings Transfer": DataSource.TRANSACTIONAL,
    "Consent Updated": None,
    "Promotion Viewed": None,
    "Promotion Clicked": None,
    "Promotion Dismissed": None,
}
#: the built-in source of traits (any other trait is crm): money is core banking's, a credit
#: score a bureau's
TRAIT_SOURCES: dict[str, DataSource] = {
    "balance": DataSource.TRANSACTIONAL,
    "overdrawn": DataSource.TRANSACTIONAL,
    "last_salary": DataSource.TRANSACTIONAL,
    "salary": DataSource.TRANSACTIONAL,
    "income": DataSource.TRANSACTIONAL,
    "credit_score": DataSource.THIRD_PARTY,
}


class ConsentGrant(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One customer's choice for a purpose (and a source): granted or not, on which basis,
    when (event time) and set by whom."""

    granted: bool
    basis: LegalBasis = LegalBasis.CONSENT
    at: float = 0.0
    #: ``identify`` (a trait), ``event`` (``Consent Updated``), ``api`` (the consent route),
    #: or what the sender said
    origin: str = ""


class ConsentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The catalog's ``consent`` section: defaults per source and per purpose and source,
    the sources service messages use under the contract, and where traits and events come
    from. Purpose defaults stay in ``contact_policy.consent_defaults``."""

    #: a source's default under every purpose (third-party data is off unless granted)
    sources: dict[DataSource, bool] = msgspec.field(
        default_factory=lambda: {DataSource.THIRD_PARTY: False}
    )
    #: a source's default under one purpose (overrides ``sources``)
    purposes: dict[Purpose, dict[DataSource, bool]] = {}
    #: sources a service message may read without personalization consent (legal basis:
    #: contract; telling a customer the account is overdrawn is part of the account); a
    #: source the customer withdrew is not read all the same
    contract_sources: list[DataSource] = msgspec.field(
        default_factory=lambda: [DataSource.TRANSACTIONAL, DataSource.CRM, DataSource.CONTEXTUAL]
    )
    #: traits and their source (others: ``TRAIT_SOURCES``, else crm)
    traits: dict[str, DataSource] = {}
    #: track events and their source (others: ``EVENT_SOURCES``, else behavioral)
    events: dict[str, DataSource] = {}


def grant_key(purpose: str | None, source: str | None = None) -> str:
    """``marketing``, ``marketing/transactional``, ``*/transactional``."""
    if source is None:
        return purpose or "*"
    return f"{purpose or '*'}/{source}"


class ConsentRules:
    """The catalog's consent rules: a customer's effective permission per purpose and source,
    and the sources each decision view hides."""

    __slots__ = ("_contract", "_defaults", "_hidden", "_purpose_sources", "_sources", "spec")

    def __init__(self, spec: ConsentSpec, purpose_defaults: Mapping[str, bool]) -> None:
        self.spec = spec
        self._defaults = {**BUILT_IN_DEFAULTS, **purpose_defaults}
        self._sources = {str(s): v for s, v in spec.sources.items()}
        self._purpose_sources = {
            str(p): {str(s): v for s, v in by.items()} for p, by in spec.purposes.items()
        }
        self._contract = frozenset(str(s) for s in spec.contract_sources)
        #: ``hidden`` of the choices most customers share (none, or a few purposes), kept
        self._hidden: dict[tuple[Any, ...], frozenset[str]] = {}

    def purpose_on(self, consent: Mapping[str, bool], purpose: str) -> bool:
        """The purpose as a whole: security always; else the customer's choice, else the
        catalog's default, else off."""
        if purpose == Purpose.SECURITY:
            return True
        granted = consent.get(purpose)
        if granted is None:
            granted = self._defaults.get(purpose)
        return granted is True

    def source_on(self, grants: Mapping[str, ConsentGrant], purpose: str, source: str) -> bool:
        """The source under ``purpose``, the most specific choice first."""
        if purpose == Purpose.SECURITY:
            return True
        if grants:
            g = grants.get(f"{purpose}/{source}") or grants.get(f"*/{source}")
            if g is not None:
                return g.granted
        by = self._purpose_sources.get(purpose)
        if by is not None and source in by:
            return by[source]
        return self._sources.get(source, True)

    def allowed(
        self,
        consent: Mapping[str, bool],
        grants: Mapping[str, ConsentGrant],
        purpose: str,
        source: str,
    ) -> bool:
        """May data from ``source`` be used for ``purpose``?"""
        return self.purpose_on(consent, purpose) and self.source_on(grants, purpose, source)

    def hidden(
        self, consent: Mapping[str, bool], grants: Mapping[str, ConsentGrant], view: View
    ) -> frozenset[str]:
        """The sources ``view`` may not read (and ``SECURITY_DATA`` for the commercial
        view: the guard's findings never sell). Kept per set of choices without source
        grants (a decision asks twice per customer)."""
        if grants:
            return self._hide(consent, grants, view)
        key = (view, *sorted(consent.items()))
        found = self._hidden.get(key)
        if found is None:
            found = self._hide(consent, grants, view)
            if len(self._hidden) < 1024:
                self._hidden[key] = found
        return found

    def _hide(
        self, consent: Mapping[str, bool], grants: Mapping[str, ConsentGrant], view: View
    ) -> frozenset[str]:
        if view is View.ANALYTICS:
            return self._hide_analytics(consent, grants)
        personal = self.purpose_on(consent, Purpose.PERSONALIZATION)
        out: set[str] = set()
        if view is View.SERVICE:
            for s in DataSource:
                if not self.source_on(grants, Purpose.PERSONALIZATION, s) or (
                    not personal and s not in self._contract
                ):
                    out.add(s.value)
            return frozenset(out)
        marketing = self.purpose_on(consent, Purpose.MARKETING)
        out.add(SECURITY_DATA)
        for s in DataSource:
            if not (
                personal
                and marketing
                and self.source_on(grants, Purpose.PERSONALIZATION, s)
                and self.source_on(grants, Purpose.MARKETING, s)
            ):
                out.add(s.value)
        return frozenset(out)

    def _hide_analytics(
        self, consent: Mapping[str, bool], grants: Mapping[str, ConsentGrant]
    ) -> frozenset[str]:
        """The analytics view hides the guard's findings, the sources not allowed for
        analytics, and, analytics withdrawn, every source and the purpose itself
        (``ANALYTICS_OFF``: no audience at all, not even one that reads no source)."""
        if not self.purpose_on(consent, Purpose.ANALYTICS):
            return _ANALYTICS_OFF
        out = {SECURITY_DATA}
        for s in DataSource:
            if not self.source_on(grants, Purpose.ANALYTICS, s):
                out.add(s.value)
        return frozenset(out)


#: what the analytics view hides of a customer who withdrew analytics: everything
ANALYTICS_OFF = Purpose.ANALYTICS.value
_ANALYTICS_OFF = frozenset({ANALYTICS_OFF, SECURITY_DATA, *(s.value for s in DataSource)})


# ------------------------------------------------------------------ setting consent


def _grant(
    grants: dict[str, ConsentGrant],
    consent: dict[str, bool] | None,
    key: str,
    value: Any,
    defaults: tuple[LegalBasis, float, str],
) -> None:
    basis, at, origin = defaults
    held = grants.get(key)
    if held is not None and held.at > at:
        return  # a choice made later stands (a device's older events folded late)
    if consent is not None:
        consent[key] = value
    grants[key] = ConsentGrant(granted=value, basis=basis, at=at, origin=origin)


def _basis(value: Any, default: LegalBasis) -> LegalBasis:
    try:
        return LegalBasis(value) if isinstance(value, str) else default
    except ValueError:
        return default


def apply_consent(
    consent: dict[str, bool],
    grants: dict[str, ConsentGrant],
    payload: Any,
    *,
    at: float,
    origin: str,
    basis: Any = None,
) -> None:
    """Fold one consent payload into a profile's ``consent`` and ``grants`` (in place).

    ``payload``: ``{purpose: bool | {"granted": bool, "basis": str, "sources": {source:
    bool}}, "sources": {source: bool}}``; the top-level ``sources`` apply under every
    purpose. Anything else in it is skipped (the API checks it first: ``consent_problems``);
    ``security`` cannot be switched off. A choice made at a later time than ``at`` stands:
    the newest choice wins whatever order events are folded in (a stitch folds a device's
    older events after the customer's)."""
    if not isinstance(payload, dict):
        return
    default = _basis(basis, LegalBasis.CONSENT)
    for key, value in payload.items():
        if key == "sources" and isinstance(value, dict):
            for source, granted in value.items():
                if source in _SOURCES and isinstance(granted, bool):
                    _grant(grants, None, grant_key(None, source), granted, (default, at, origin))
            continue
        if key not in ALL_PURPOSES or key == Purpose.SECURITY:
            continue
        if isinstance(value, bool):
            _grant(grants, consent, key, value, (default, at, origin))
        elif isinstance(value, dict):
            own = (_basis(value.get("basis"), default), at, origin)
            granted = value.get("granted")
            if isinstance(granted, bool):
                _grant(grants, consent, key, granted, own)
            sources = value.get("sources")
            if isinstance(sources, dict):
                for source, on in sources.items():
                    if source in _SOURCES and isinstance(on, bool):
                        _grant(grants, None, grant_key(key, source), on, own)


def _problems_in_sources(value: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict):
        return [(path, "must be an object of source: true|false")]
    out: list[tuple[str, str]] = []
    for source, on in value.items():
        if source not in DataSource.__members__.values():
            known = ", ".join(s.value for s in DataSource)
            out.append((f"{path}.{source}", f"unknown data source; use {known}"))
        elif not isinstance(on, bool):
            out.append((f"{path}.{source}", "must be true or false"))
    return out


def consent_problems(payload: Any, path: str = "$") -> list[tuple[str, str]]:
    """What is wrong with a consent payload (``apply_consent``), as (field path, reason)
    pairs; empty when it is right."""
    if not isinstance(payload, dict) or not payload:
        return [(path, "must be a non-empty object of purpose: true|false|{...}")]
    out: list[tuple[str, str]] = []
    for key, value in payload.items():
        at = f"{path}.{key}"
        if key == "sources":
            out += _problems_in_sources(value, at)
        elif key == Purpose.SECURITY:
            out.append((at, "security is always on (legitimate interest): it cannot be set"))
        elif key not in ALL_PURPOSES:
            known = ", ".join(p for p in ALL_PURPOSES if p != Purpose.SECURITY)
            out.append((at, f"unknown purpose; use {known} or sources"))
        elif isinstance(value, dict):
            out += _purpose_problems(value, at)
        elif not isinstance(value, bool):
            out.append((at, "must be true, false or an object"))
    return out


def _purpose_problems(value: dict[str, Any], at: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for field in value:
        if field not in ("granted", "basis", "sources"):
            out.append((f"{at}.{field}", "unknown field; use granted, basis, sources"))
    if "granted" in value and not isinstance(value["granted"], bool):
        out.append((f"{at}.granted", "must be true or false"))
    if "basis" in value and value["basis"] not in _BASES:
        known = ", ".join(b.value for b in LegalBasis)
        out.append((f"{at}.basis", f"unknown legal basis; use {known}"))
    if "sources" in value:
        out += _problems_in_sources(value["sources"], f"{at}.sources")
    if "granted" not in value and "sources" not in value:
        out.append((at, "needs granted or sources"))
    return out


def consent_state(
    consent: Mapping[str, bool], grants: Mapping[str, ConsentGrant]
) -> dict[str, bool]:
    """Every choice a customer made, by key (``marketing``, ``*/transactional``): what the
    audit log compares before and after an event."""
    out = dict(consent)
    for key, g in grants.items():
        out[key] = g.granted
    return out
