"""Which data source each profile feature comes from, and a profile masked to a view.

Every feature a rule, a model or a reason reads is attributed to the sources whose events
feed it (``FeatureSources.of_path`` for a rule's path, ``FeatureSources.field`` for a
profile field); a feature fed by several sources is read only when all of them are allowed,
so a view that hides a source never depends on that source's events (the property
``tests/unit/test_consent_property.py`` checks):

=====================================  ================================================
feature                                sources
=====================================  ================================================
``interest.*``                         behavioral (the fold counts only behavioral events)
``profile.funnel``                     behavioral, and the sources of the events with a
                                       stage of their own and of products (crm)
``products``                           the ``products`` trait's, ``Product Opened/Closed``'s
``profile.balance``, ``overdrawn``     the ``balance`` trait's and the balance events'
                                       (transactional)
``profile.<banking feature>``          the balance events' (transactional); a price
                                       rise's also ``Subscription Reviewed``'s (crm)
``profile.life_events``                ``Life Event``'s (crm)
``traits.<name>``, ``profile.age``     the trait's (``consent.traits``, else crm)
``profile.engagement``, ``sessions``,  each event source's own counters
``events``                             (``Profile.by_source``), summed over the sources
                                       the view allows: never a hidden one's
``profile.session``, ``recent``        every event source (not split: hidden from a view
                                       that hides any)
``context.*``                          contextual
``security.*``                         the guard's findings (``SECURITY_DATA``)
``offers.*``, ``profile.consent``,     none: the bank's own contact history (read for
``customer_id``, ``known``, ``now``    contact caps whatever the customer allows), the
                                       consent itself, identity, the clock
=====================================  ================================================
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Any

import msgspec

from nextbest.profile.banking import BANKING_FEATURES
from nextbest.profile.consent import (
    EVENT_SOURCES,
    SECURITY_DATA,
    TRAIT_SOURCES,
    ConsentSpec,
    DataSource,
)
from nextbest.profile.model import Profile

__all__ = ["SUMMED", "FeatureSources"]

#: the activity counters a view reads summed over the event sources it allows
#: (``Profile.by_source``): hiding a source takes its events out, not the counter
SUMMED = frozenset({"engagement", "sessions", "events"})
_LEGACY = "*"
_BEHAVIORAL = DataSource.BEHAVIORAL.value

_NONE: frozenset[str] = frozenset()
#: the events with a funnel stage of their own (``profile.fold._FUNNEL_BY_EVENT``)
_STAGED = (
    "Calculator Used",
    "Callback Requested",
    "Application Started",
    "Application Submitted",
    "Application Completed",
    "Product Opened",
)
_BALANCE_EVENTS = (
    "Overdraft Started",
    "Overdraft Ended",
    "Balance Updated",
    "Transaction Posted",
)


class FeatureSources:
    """The catalog's attribution of features to data sources (``consent.traits`` and
    ``consent.events`` over the built-in ones)."""

    __slots__ = ("_blank", "_fields", "_keys", "_traits", "events", "used")

    def __init__(self, spec: ConsentSpec) -> None:
        self.events: dict[str, DataSource | None] = {**EVENT_SOURCES, **spec.events}
        self._traits: dict[str, str] = {
            **{k: v.value for k, v in TRAIT_SOURCES.items()},
            **{k: v.value for k, v in spec.traits.items()},
        }
        every = frozenset(
            {DataSource.BEHAVIORAL.value, DataSource.CRM.value}
            | {s.value for s in self.events.values() if s is not None}
        )
        products = self._sources_of(["Product Opened", "Product Closed"]) | {self.trait("products")}
        self._fields: dict[str, frozenset[str]] = {
            "interest": frozenset({DataSource.BEHAVIORAL.value}),
            "funnel": self._sources_of(_STAGED) | {DataSource.BEHAVIORAL.value} | products,
            "products": products,
            "balance": self._sources_of(_BALANCE_EVENTS) | {self.trait("balance")},
            "life_events": self._sources_of(["Life Event"]),
            "age": frozenset({self.trait("birthday"), self.trait("age")}),
            "activity": every,
            "context": frozenset({DataSource.CONTEXTUAL.value}),
            "security": frozenset({SECURITY_DATA}),
            "last_salary": self._sources_of(["Salary Received"]) | {self.trait("last_salary")},
        }
        # core banking's fees, spells, idle cash and payments (``profile.banking``); price
        # rises also read the customer's reviews (``Subscription Reviewed`` ends that
        # merchant's rises)
        self._fields["banking"] = self._sources_of(_BALANCE_EVENTS)
        self._fields["rises"] = self._fields["banking"] | self._sources_of(
            ["Subscription Reviewed"]
        )
        for name in BANKING_FEATURES:
            rises = name.startswith("price_rise")
            self._fields[name] = self._fields["rises" if rises else "banking"]
        for name in ("overdrawn",):
            self._fields[name] = self._fields["balance"]
        for name in ("lifecycle",):
            self._fields[name] = self._fields["age"]
        for name in ("engagement", "sessions", "events", "session", "recent"):
            self._fields[name] = every
        #: ``Profile.by_source``'s keys and the sources each stands for (``*``: every one)
        self._keys: dict[str, frozenset[str]] = {_LEGACY: every}
        #: per set of hidden sources: the fields a masked profile empties, the traits it
        #: drops (None: every trait not of a hidden source, as crm is hidden), kept
        self._blank: dict[frozenset[str], tuple[dict[str, Any], frozenset[str] | None, bool]] = {}
        #: every source some feature is attributed to: hiding any other changes nothing
        self.used: frozenset[str] = frozenset().union(*self._fields.values()) | frozenset(
            self._traits.values()
        )

    def _sources_of(self, names: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for name in names:
            source = self.events.get(name, DataSource.BEHAVIORAL)
            if source is not None:
                out.add(source.value)
        return frozenset(out)

    @property
    def traits(self) -> dict[str, str]:
        """Each declared trait's source (others: crm)."""
        return dict(self._traits)

    def trait(self, name: str) -> str:
        """A trait's source (crm unless declared)."""
        return self._traits.get(name, DataSource.CRM.value)

    def event(self, name: str | None) -> DataSource | None:
        """A track event's source (behavioral unless declared; None: no customer data)."""
        return self.events.get(name or "", DataSource.BEHAVIORAL)

    def field(self, name: str) -> frozenset[str]:
        """The sources of one profile feature (``profile.<name>``); none for identity and
        consent."""
        return self._fields.get(name, _NONE)

    def of_path(self, path: tuple[str, ...]) -> frozenset[str]:
        """The sources a rule path reads (``("interest", "mortgage", "count_14d")``); a root
        read whole reads all of its fields'."""
        root = path[0]
        if root == "interest":
            return self._fields["interest"]
        if root == "products":
            return self._fields["products"]
        if root == "context":
            return self._fields["context"]
        if root == "security":
            return self._fields["security"]
        if root == "traits":
            if len(path) > 1:
                return frozenset({self.trait(path[1])})
            return frozenset(self._traits.values()) | {DataSource.CRM.value}
        if root == "profile":
            if len(path) > 1:
                return self._fields.get(path[1], _NONE)
            return frozenset().union(*self._fields.values()) - {SECURITY_DATA}
        return _NONE  # offers (contact history), now, segments (bound per view)

    def needs(self, path: tuple[str, ...]) -> frozenset[str]:
        """The sources that must all be allowed for a rule to read ``path`` at all: those of
        ``of_path``, but none for the summed activity counters (``SUMMED``: a view reads
        them over the sources it allows)."""
        if len(path) == 2 and path[0] == "profile" and path[1] in SUMMED:
            return _NONE
        return self.of_path(path)

    def hides(self, hidden: frozenset[str]) -> bool:
        """Hiding ``hidden`` masks some feature."""
        return not hidden.isdisjoint(self.used)

    def masked(self, profile: Profile, hidden: frozenset[str]) -> Profile:
        """``profile`` as a view hiding ``hidden`` sees it: the same object when nothing it
        holds is hidden, else a shallow copy with the hidden features emptied (what a new
        customer has there); consent, contact history and identity stay."""
        blank = self._blank.get(hidden)
        if blank is None:
            blank = self._blanks(hidden)
            if len(self._blank) < 256:
                self._blank[hidden] = blank
        changes, drop, rises = blank
        if "event_count" in changes:
            changes = {**changes, **self._activity(profile, hidden)}
        traits = profile.traits
        if traits and (drop is None or any(k in traits for k in drop)):
            kept = {k: v for k, v in traits.items() if self.trait(k) not in hidden}
            changes = {**changes, "traits": kept}
        banking = profile.banking
        if rises and banking is not None and banking.rises:
            changes = {**changes, "banking": msgspec.structs.replace(banking, rises=[])}
        if not changes:
            return profile
        return msgspec.structs.replace(profile, **changes)

    def _sources_of_key(self, key: str) -> frozenset[str]:
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = frozenset(key.split("+"))
        return found

    def _activity(self, profile: Profile, hidden: frozenset[str]) -> dict[str, Any]:
        """The activity counters of the event sources ``hidden`` leaves: events and
        sessions summed, the 30-day event times (the profile's less the hidden sources',
        or, behavioral hidden, the allowed ones' merged). A profile folded before the split
        (``by_source`` None) shows none, as before it."""
        split = profile.by_source
        if not split:
            return {}
        events = sessions = 0
        shown: list[list[float]] = []
        withheld: list[list[float]] = []
        for key, entry in split.items():
            on = key != _LEGACY and hidden.isdisjoint(self._sources_of_key(key))
            if on:
                events += entry.events
                sessions += entry.sessions
            if key != _BEHAVIORAL:
                (shown if on else withheld).append(entry.activity)
        if _BEHAVIORAL in hidden:
            activity = list(heapq.merge(*shown))
        else:
            activity = _less(profile.activity, withheld)
        return {"event_count": events, "sessions": sessions, "activity": activity}

    def _blanks(self, hidden: frozenset[str]) -> tuple[dict[str, Any], frozenset[str] | None, bool]:
        """What ``masked`` empties for ``hidden``, the traits it drops, and whether it drops
        the price rises alone (the reviews' source hidden, core banking's not)."""
        changes: dict[str, Any] = {}
        f = self._fields

        def off(name: str) -> bool:
            return not hidden.isdisjoint(f[name])

        if off("interest"):
            changes["interests"] = {}
        if off("funnel"):
            changes["funnel"] = {}
        if off("products"):
            changes["products"] = []
        if off("balance"):
            changes["balance"] = None
            changes["overdrawn"] = False
        if off("banking"):
            changes["banking"] = None
        rises = off("rises") and not off("banking")
        if off("life_events"):
            changes["life_events"] = []
        if off("activity"):
            changes.update(activity=[], session=None, sessions=0, event_count=0, recent=[])
        if DataSource.CRM in hidden:
            return changes, None, rises
        return changes, frozenset(k for k, s in self._traits.items() if s in hidden), rises


def _less(hits: list[float], withheld: list[list[float]]) -> list[float]:
    """``hits`` without the times in ``withheld`` (each once: a multiset difference). A
    withheld time missing from ``hits`` is older than all of them (``hits`` was cut at a
    later newest hit), so it takes nothing out."""
    if not any(withheld):
        return list(hits)
    out = Counter(t for times in withheld for t in times)
    kept: list[float] = []
    for t in hits:
        if out.get(t):
            out[t] -= 1
        else:
            kept.append(t)
    return kept
