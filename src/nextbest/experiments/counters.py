"""Experiment counters: per campaign x arm x KPI, the sums the statistics read, kept at ingest.

A pure reducer, fed in fold order by the engine (``Engine._apply`` for events, the decision
path for control exposures), for the embedded engine and a fold worker alike:

- **exposure**: a treatment customer is exposed by a ``Promotion Viewed`` of one of the
  campaign's offers (joined to its decision: the item names campaign, arm and variant); a
  control customer by a decision that would have shown one of the campaign's offers but for
  the control arm (``Decision.control``: where the policy in use, learned order and
  exploration included, would have put it in a visible slot). Only the first exposure
  counts: it fixes the customer's arm, starts the attribution window and freezes what
  ``experiments.exposure`` reads then: each KPI's pre-exposure covariate and the customer's
  audiences (a control exposure's come logged with its decision; a treated customer's are
  read from the profile as their view is folded).
- **KPI**: an event named as one of the campaign's KPIs (the primary, then the guardrails:
  ``Catalog.kpis``) whose ``where`` holds, from an exposed customer, timestamped within
  ``within_days`` after the first exposure. A conversion KPI's value is 0/1 (converted once);
  a ``value`` KPI sums that number property per customer.

Customers are keyed by their stable experiment id (``Profile.experiment_key``), so the arm
a visitor had before login is kept after it. Per campaign, arm (``control``, the variant id,
or ``treatment``) and KPI the counts are kept as **daily deltas** (``Sums`` per UTC day of
the event that changed them): their running total up to day *d* is the campaign's state at
the end of day *d* (sequential analysis reads it), the total over all days the state now.
Each exposure adds its covariate to ``pre_sum`` and ``pre_sum_squares`` on its day, each
change of a customer's value ``change x covariate`` to ``cross_sum`` on the event's day, so
the totals are exactly CUPED's sums. Per audience (``by_audience``: audience -> arm -> KPI),
the same sums without days: the audience breakdown reads totals only.

Every float a bucket adds comes from one source in a fixed order (exposures add ``n`` and the
covariate's sums, in decision log order for the control arm and event log order for the
others; KPI events add ``sum``, ``sum_squares`` and ``cross_sum`` in event log order), so a
replay that counts every logged control exposure before folding the events gives the very
same bits as the live engine, which counted them in between.

Counts are plain sums (``Sums``), turned into ``statistics.ArmCounts`` when read, so the
ingest path does not load scipy. State is saved as rows: per campaign its counts
(``experiment/<campaign>``: days and audiences, small, what results read) and per exposed
customer their exposure (``exposure/<campaign>/<customer key>``), so a save writes the
customers that changed since the last one, not every customer of the campaign. A replay
of the logs rebuilds it identically. Recording the same exposure twice changes nothing (only
the first counts), so a restart may re-record decisions logged around its snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import cel
import msgspec

from nextbest.catalog.compiled import Catalog, CompiledKpi
from nextbest.decide.model import Decision
from nextbest.events.model import Event
from nextbest.events.names import EventName
from nextbest.experiments.exposure import (
    AnalyticsView,
    FirstExposure,
    analytics_view,
    covariates,
    macro_audiences,
    measured_segments,
    withheld,
)
from nextbest.profile.model import Profile
from nextbest.rules.expression import RuleOutcome

__all__ = [
    "CONTROL",
    "DAY",
    "EXPERIMENT_ROW",
    "EXPOSURE_ROW",
    "MAX_AUDIENCES",
    "TREATMENT",
    "CampaignCounters",
    "CounterChanges",
    "ExperimentCounters",
    "Exposure",
    "Sums",
    "decode_counters",
    "decode_exposure",
    "exposure_key",
]

#: the state rows' kinds: ``experiment/<campaign>`` (counts), and
#: ``exposure/<campaign>/<customer key>`` (one exposed customer)
EXPERIMENT_ROW = "experiment"
EXPOSURE_ROW = "exposure"
CONTROL = "control"
#: the arm of a treated customer of a campaign without variants
TREATMENT = "treatment"
DAY = 86_400.0
#: audiences a campaign breaks its results down by, at most (the catalog's segments and the
#: macro-segments: a bounded set; past it, a new audience is not counted); an exposure keeps
#: its audiences' indices as bytes
MAX_AUDIENCES = 256


class Sums(msgspec.Struct, array_like=True, gc=False):
    """One arm's sums for one KPI (``statistics.ArmCounts``' fields), mutable."""

    n: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0
    pre_sum: float = 0.0
    pre_sum_squares: float = 0.0
    cross_sum: float = 0.0

    def add(self, other: Sums) -> None:
        self.n += other.n
        self.sum += other.sum
        self.sum_squares += other.sum_squares
        self.pre_sum += other.pre_sum
        self.pre_sum_squares += other.pre_sum_squares
        self.cross_sum += other.cross_sum

    def expose(self, pre: float) -> None:
        """One more exposed customer, whose covariate is ``pre`` (their value is 0 yet)."""
        self.n += 1
        if pre:
            self.pre_sum += pre
            self.pre_sum_squares += pre * pre

    def revalue(self, old: float, new: float, pre: float) -> None:
        """One exposed customer's value went from ``old`` to ``new``."""
        self.sum += new - old
        self.sum_squares += new * new - old * old
        if pre:
            self.cross_sum += (new - old) * pre


class Exposure(msgspec.Struct, array_like=True, gc=False):
    """One exposed customer of one campaign: the arm, when first exposed, each KPI's value,
    each KPI's pre-exposure covariate (empty: all 0, most customers) and their audiences
    (one byte each: an index into the campaign's ``audience_names``), both frozen at the
    first exposure. Compact: a campaign keeps millions of them in memory."""

    arm: str
    first: float
    values: list[float]
    pre: tuple[float, ...] = ()
    audiences: bytes = b""


class CampaignCounters(msgspec.Struct, gc=False):
    """One campaign's state: its exposed customers and, per arm and KPI, daily deltas; per
    audience, arm and KPI the totals."""

    customers: dict[str, Exposure] = {}
    #: arm -> KPI index -> UTC day number -> the sums that changed that day
    days: dict[str, list[dict[int, Sums]]] = {}
    #: every audience met at a first exposure, in the order met (``Exposure.audiences``)
    audience_names: list[str] = []
    #: audience -> arm -> KPI index -> sums
    by_audience: dict[str, dict[str, list[Sums]]] = {}
    #: arm -> exposures analytics withheld something of (the customer withdrew analytics:
    #: no covariate, no audience; or the source of a KPI's covariate: 0 there)
    withheld: dict[str, int] = {}

    def _bucket(self, arm: str, kpi: int, kpis: int, day: int) -> Sums:
        per_kpi = self.days.get(arm)
        if per_kpi is None:
            per_kpi = self.days[arm] = []
        while len(per_kpi) < kpis:  # a new arm, or a KPI the campaign gained on a reload
            per_kpi.append({})
        buckets = per_kpi[kpi]
        found = buckets.get(day)
        if found is None:
            found = buckets[day] = Sums()
        return found

    def _audience(self, audience: str, arm: str, kpis: int) -> list[Sums]:
        """The sums of ``audience`` and ``arm``, one per KPI."""
        arms = self.by_audience.get(audience)
        if arms is None:
            arms = self.by_audience[audience] = {}
        per_kpi = arms.get(arm)
        if per_kpi is None:
            per_kpi = arms[arm] = []
        while len(per_kpi) < kpis:
            per_kpi.append(Sums())
        return per_kpi

    def totals(self, arm: str, kpi: int, upto_day: float = math.inf) -> Sums:
        """The arm's sums for KPI ``kpi`` at the end of day ``upto_day`` (default: now)."""
        out = Sums()
        per_kpi = self.days.get(arm)
        if per_kpi is not None and kpi < len(per_kpi):
            for day, sums in per_kpi[kpi].items():
                if day <= upto_day:
                    out.add(sums)
        return out

    def audience_totals(self, audience: str, arm: str, kpi: int) -> Sums:
        """The arm's sums for KPI ``kpi`` among the customers in ``audience`` (now)."""
        per_kpi = self.by_audience.get(audience, {}).get(arm)
        if per_kpi is None or kpi >= len(per_kpi):
            return Sums()
        return msgspec.structs.replace(per_kpi[kpi])

    def day_numbers(self) -> list[int]:
        return sorted({d for per_kpi in self.days.values() for b in per_kpi for d in b})


class _Counts(msgspec.Struct, gc=False):
    """An ``experiment/<campaign>`` row: the counts without the customers (a row saved
    before exposures had rows of their own holds them under ``customers``)."""

    days: dict[str, list[dict[int, Sums]]] = {}
    audience_names: list[str] = []
    by_audience: dict[str, dict[str, list[Sums]]] = {}
    customers: dict[str, Exposure] = {}
    withheld: dict[str, int] = {}


class CounterChanges(NamedTuple):
    """What a save writes: each changed campaign's counts row (None: gone), each changed
    exposure's row, and whether every row is rewritten."""

    #: (campaign, msgpack counts or None)
    campaigns: list[tuple[str, bytes | None]]
    #: (``exposure_key``, msgpack ``Exposure``; None: erased, delete the row)
    exposures: list[tuple[str, bytes | None]]
    replace: bool


#: a plain string: no ``EventName`` lookup (a metaclass hook call in Python 3.11) per event
_VIEWED = str(EventName.PROMOTION_VIEWED)
_encode = msgspec.msgpack.Encoder().encode
_decode_counts = msgspec.msgpack.Decoder(_Counts).decode
_decode_exposure = msgspec.msgpack.Decoder(Exposure).decode
_decode_days = msgspec.msgpack.Decoder(dict[str, list[dict[int, Sums]]]).decode
_decode_audiences = msgspec.msgpack.Decoder(dict[str, dict[str, list[Sums]]]).decode


def decode_exposure(body: bytes) -> Exposure:
    """An exposure row's body, as saved."""
    return _decode_exposure(body)


def exposure_key(campaign: str, customer: str) -> str:
    """An exposure row's key: campaign ids hold no ``/``, customer keys may."""
    return f"{campaign}/{customer}"


def _counts_of(state: CampaignCounters) -> bytes:
    return _encode(
        _Counts(state.days, state.audience_names, state.by_audience, withheld=state.withheld)
    )


def _canonical(state: CampaignCounters) -> tuple[Any, ...]:
    """``state`` in sorted order, audiences by name: the same counters whatever order
    customers came in."""
    names = state.audience_names
    return (
        sorted(
            (key, (e.arm, e.first, e.values, e.pre, sorted(names[i] for i in e.audiences)))
            for key, e in state.customers.items()
        ),
        [(arm, [sorted(b.items()) for b in state.days[arm]]) for arm in sorted(state.days)],
        [
            (a, sorted(state.by_audience[a].items()))
            for a in sorted(state.by_audience)
            if state.by_audience[a]
        ],
        sorted(state.withheld.items()),
    )


def decode_counters(body: bytes) -> CampaignCounters:
    """A saved ``experiment/<campaign>`` row (the counts; the customers of a row saved
    before exposures had rows of their own, if any)."""
    counts = _decode_counts(body)
    return CampaignCounters(
        counts.customers, counts.days, counts.audience_names, counts.by_audience, counts.withheld
    )


class ExperimentCounters:
    """Every campaign's counters; ``dirty`` the campaigns changed since the last save,
    ``dirty_exposures`` the (campaign, customer) exposures."""

    def __init__(self, catalog: Catalog) -> None:
        self.campaigns: dict[str, CampaignCounters] = {}
        #: look-ups kept beside the state (never saved): campaign -> audience -> index,
        #: and (campaign, audience index, arm) -> that audience's sums per KPI
        self._ids: dict[str, dict[str, int]] = {}
        self._sums: dict[tuple[str, int, str], list[Sums]] = {}
        self.dirty: set[str] = set()
        self.dirty_exposures: set[tuple[str, str]] = set()
        #: erased exposures whose rows the next save deletes (``forget``)
        self.erased: set[tuple[str, str]] = set()
        #: every campaign's rows are to be rewritten (a rebuild)
        self.replace = False
        self.use(catalog)

    def use(self, catalog: Catalog) -> None:
        """Match KPI events and offers with ``catalog`` from now on."""
        #: event name -> (campaign, KPI index, KPI): the index KPI events are matched through
        by_event: dict[str, list[tuple[str, int, CompiledKpi]]] = {}
        self._kpis: dict[str, list[CompiledKpi]] = {}
        for campaign, kpis in catalog.kpis.items():
            self._kpis[campaign] = list(kpis)
            for i, kpi in enumerate(kpis):
                by_event.setdefault(kpi.spec.event, []).append((campaign, i, kpi))
        self._by_event = by_event
        self._offer_campaign = {
            o.id: o.campaign.id for o in catalog.offers.values() if o.campaign is not None
        }
        self._catalog = catalog

    def wants(self, event: Event) -> bool:
        """``event`` may change a counter (a view, or a KPI event of some campaign)."""
        name = event.name
        return name is not None and (name == _VIEWED or name in self._by_event)

    # ------------------------------------------------------------------ exposure
    def expose(
        self,
        campaign: str,
        arm: str,
        key: str,
        at: float,
        pre: Sequence[float] = (),
        audiences: Sequence[str] = (),
        withheld: bool = False,
    ) -> bool:
        """Expose customer ``key`` to ``campaign`` in ``arm`` at ``at``, with each KPI's
        covariate ``pre`` (missing ones: 0) and their ``audiences``; ``withheld``: analytics
        withheld some of them (counted per arm). False (nothing changed) if they were
        exposed already or the campaign has no KPI."""
        kpis = self._kpis.get(campaign)
        if kpis is None or not key:
            return False
        state = self.campaigns.get(campaign)
        if state is None:
            state = self.campaigns[campaign] = CampaignCounters()
        if key in state.customers:
            return False
        n = len(kpis)
        covariate = [float(p) for p in pre[:n]] + [0.0] * (n - len(pre))
        frozen = tuple(covariate) if any(covariate) else ()
        indices = self._audience_indices(campaign, state, audiences)
        state.customers[key] = Exposure(arm, at, [0.0] * n, frozen, indices)
        if withheld:
            state.withheld[arm] = state.withheld.get(arm, 0) + 1
        day = int(at // DAY)
        for i in range(n):
            state._bucket(arm, i, n, day).expose(covariate[i])
        for a in indices:
            per_kpi = self._audience_sums(campaign, state, a, arm, n)
            if frozen:
                for i in range(n):
                    per_kpi[i].expose(frozen[i])
            else:  # most customers: no covariate, one more exposed
                for i in range(n):
                    per_kpi[i].n += 1
        self.dirty.add(campaign)
        self.dirty_exposures.add((campaign, key))
        return True

    def _audience_indices(
        self, campaign: str, state: CampaignCounters, audiences: Sequence[str]
    ) -> bytes:
        """``audiences``' indices in the campaign's ``audience_names`` (new ones added, up
        to ``MAX_AUDIENCES``), each once."""
        if not audiences:
            return b""
        ids = self._ids.get(campaign)
        names = state.audience_names
        if ids is None or len(ids) != len(names):
            ids = self._ids[campaign] = {a: i for i, a in enumerate(names)}
        out: list[int] = []
        for audience in audiences:
            i = ids.get(audience)
            if i is None:
                if len(names) >= MAX_AUDIENCES:
                    continue
                names.append(audience)
                i = ids[audience] = len(names) - 1
            if i not in out:
                out.append(i)
        return bytes(out)

    def _audience_sums(
        self, campaign: str, state: CampaignCounters, audience: int, arm: str, kpis: int
    ) -> list[Sums]:
        """The sums of an audience (by index) and arm, one per KPI (looked up once)."""
        key = (campaign, audience, arm)
        found = self._sums.get(key)
        if found is None or len(found) < kpis:
            found = self._sums[key] = state._audience(state.audience_names[audience], arm, kpis)
        return found

    def record_decision(self, decision: Decision, key: str) -> None:
        """The control exposures of ``decision`` (made for customer ``key``), with the
        covariates and audiences it logged."""
        for offer in decision.control:
            campaign = self._offer_campaign.get(offer)
            if campaign is not None:
                hidden = frozenset(decision.analytics_hidden)
                self.expose(
                    campaign,
                    CONTROL,
                    key,
                    decision.timestamp,
                    decision.covariates.get(campaign, ()),
                    [
                        *measured_segments(decision.segments, hidden, self._catalog),
                        *decision.audiences,
                    ],
                    withheld(AnalyticsView(None, hidden), self._kpis[campaign], self._catalog)
                    if hidden and campaign in self._kpis
                    else False,
                )

    def observe(
        self,
        event: Event,
        key: str,
        decision: Decision | None,
        profile: Profile | None = None,
        seen: FirstExposure | None = None,
    ) -> None:
        """Fold one event of customer ``key`` (whose profile, with the event folded, is
        ``profile``; or, counted away from the profile, what a first exposure would read
        from it: ``seen``): a treatment exposure (``Promotion Viewed`` joined to
        ``decision``), a KPI event, or nothing."""
        if not key:
            return
        if event.name == EventName.PROMOTION_VIEWED and decision is not None:
            offer = event.properties.get("promotion_id")
            for item in decision.items:
                if item.offer_id == offer and item.campaign_id is not None:
                    self._treated(
                        item.campaign_id, item.variant, key, event, decision, profile, seen
                    )
                    break
        matches = self._by_event.get(event.name or "") if event.name else None
        if matches:
            self._kpi(event, key, matches)

    def _treated(
        self,
        campaign: str,
        variant: str | None,
        key: str,
        event: Event,
        decision: Decision,
        profile: Profile | None,
        seen: FirstExposure | None = None,
    ) -> None:
        state = self.campaigns.get(campaign)
        if (state is not None and key in state.customers) or campaign not in self._kpis:
            return  # exposed already: nothing to read
        at = event.timestamp
        kpis, catalog = self._kpis[campaign], self._catalog
        if profile is None and seen is not None and seen.campaign == campaign:
            pre, macro = list(seen.pre), list(seen.audiences)
            view = AnalyticsView(None, frozenset(seen.hidden))
        else:
            view = analytics_view(profile, catalog)
            pre = covariates(view, kpis, at, catalog)
            macro = macro_audiences(view, catalog, at)
        segments = measured_segments(decision.segments, view.hidden, catalog)
        self.expose(
            campaign,
            variant or TREATMENT,
            key,
            at,
            pre,
            [*segments, *macro],
            withheld(view, kpis, catalog),
        )

    def _kpi(self, event: Event, key: str, matches: list[tuple[str, int, CompiledKpi]]) -> None:
        context: Any = None
        for campaign, i, kpi in matches:
            state = self.campaigns.get(campaign)
            if state is None:
                continue
            exposure = state.customers.get(key)
            if exposure is None or i >= len(exposure.values):
                continue
            spec = kpi.spec
            if not exposure.first <= event.timestamp <= exposure.first + spec.within_days * DAY:
                continue
            old = exposure.values[i]
            if spec.value is None and old == 1.0:
                continue  # converted already: a conversion counts once
            if kpi.where.source != "true":
                if context is None:
                    context = cel.Context(
                        variables={"properties": event.properties, "context": event.context}
                    )
                if kpi.where.check(context) is not RuleOutcome.TRUE:
                    continue
            if spec.value is None:
                new = 1.0
            else:
                raw = event.properties.get(spec.value)
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    continue
                if not math.isfinite(raw):
                    continue
                new = old + float(raw)
            if new == old:
                continue
            exposure.values[i] = new
            kpis = len(exposure.values)
            pre = exposure.pre[i] if i < len(exposure.pre) else 0.0
            day = int(event.timestamp // DAY)
            state._bucket(exposure.arm, i, kpis, day).revalue(old, new, pre)
            for a in exposure.audiences:
                self._audience_sums(campaign, state, a, exposure.arm, kpis)[i].revalue(
                    old, new, pre
                )
            self.dirty.add(campaign)
            self.dirty_exposures.add((campaign, key))

    # ------------------------------------------------------------------ state
    def take_changes(self, every: bool = False) -> CounterChanges:
        """The rows to save (``every``: all of them): each changed campaign's counts, each
        changed exposure; from here on nothing counts as changed (``keep_changes`` puts
        them back if the save fails)."""
        replace = self.replace or every
        names: Iterable[str] = self.campaigns if replace else sorted(self.dirty)
        campaigns = [
            (c, _counts_of(self.campaigns[c]) if c in self.campaigns else None) for c in names
        ]
        if replace:
            changed: Iterable[tuple[str, str]] = (
                (c, k) for c in sorted(self.campaigns) for k in self.campaigns[c].customers
            )
        else:
            changed = sorted(self.dirty_exposures)
        exposures: list[tuple[str, bytes | None]] = []
        for campaign, key in changed:
            state = self.campaigns.get(campaign)
            exposure = state.customers.get(key) if state is not None else None
            if exposure is not None:
                exposures.append((exposure_key(campaign, key), _encode(exposure)))
            elif (campaign, key) in self.erased:
                exposures.append((exposure_key(campaign, key), None))
        self.erased = set()
        self.dirty = set()
        self.dirty_exposures = set()
        self.replace = False
        return CounterChanges(campaigns, exposures, replace)

    def keep_changes(self, changes: CounterChanges) -> None:
        """A save failed: these rows are saved next time."""
        self.dirty.update(c for c, _ in changes.campaigns)
        for row_key, body in changes.exposures:
            campaign, _, key = row_key.partition("/")
            self.dirty_exposures.add((campaign, key))
            if body is None:
                self.erased.add((campaign, key))
        self.replace = self.replace or changes.replace

    def exposures_of(self, keys: Collection[str]) -> dict[str, dict[str, Exposure]]:
        """Campaign -> key -> a copy of the exposure, for these experiment keys."""
        out: dict[str, dict[str, Exposure]] = {}
        for campaign, state in sorted(self.campaigns.items()):
            found = {k: state.customers[k] for k in keys if k in state.customers}
            if found:
                out[campaign] = {
                    k: msgspec.structs.replace(e, values=list(e.values)) for k, e in found.items()
                }
        return out

    def forget(self, keys: Collection[str]) -> int:
        """Erase customers (``keys``: their experiment keys): their exposure rows go at the
        next save; the campaigns' counts they added to stay (aggregates: results and their
        statistics must not move because one customer left). How many exposures went."""
        n = 0
        for campaign, state in self.campaigns.items():
            for key in keys:
                if state.customers.pop(key, None) is not None:
                    n += 1
                    self.dirty_exposures.add((campaign, key))
                    self.erased.add((campaign, key))
        return n

    def restore(
        self, rows: Iterable[tuple[str, bytes]], exposures: Iterable[tuple[str, bytes]] = ()
    ) -> None:
        """Saved counts rows (campaign, body) and exposure rows (``exposure_key``, body)."""
        self._ids.clear()
        self._sums.clear()
        for campaign, body in rows:
            state = decode_counters(body)
            self.campaigns[campaign] = state
            if state.customers:  # saved with its customers: each gets its own row now
                self.dirty.add(campaign)
                self.dirty_exposures.update((campaign, k) for k in state.customers)
        for row_key, body in exposures:
            campaign, _, key = row_key.partition("/")
            found = self.campaigns.get(campaign)
            if found is None:
                found = self.campaigns[campaign] = CampaignCounters()
            found.customers[key] = _decode_exposure(body)

    def state(self) -> bytes:
        """Every campaign's counters, in one canonical encoding (for comparisons)."""
        return _encode([(c, _canonical(self.campaigns[c])) for c in sorted(self.campaigns)])

    def copy(self, customers: bool = False) -> dict[str, CampaignCounters]:
        """Every campaign's counters, decoupled from the live ones: the counts, and the
        exposed customers only if asked (millions of them: what results never need)."""
        out: dict[str, CampaignCounters] = {}
        for c in sorted(self.campaigns):
            state = self.campaigns[c]
            out[c] = CampaignCounters(
                customers={
                    k: msgspec.structs.replace(e, values=list(e.values))
                    for k, e in state.customers.items()
                }
                if customers
                else {},
                days=_decode_days(_encode(state.days)),
                audience_names=list(state.audience_names),
                by_audience=_decode_audiences(_encode(state.by_audience)),
                withheld=dict(state.withheld),
            )
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.campaigns))

    def get(self, campaign: str) -> CampaignCounters | None:
        return self.campaigns.get(campaign)
