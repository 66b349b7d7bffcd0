"""Experiment counters: per campaign x arm x KPI, the sums the statistics read, kept at ingest.

A pure reducer, fed in fold order by the engine (``Engine._apply`` for events, the decision
path for control exposures), for the embedded engine and a fold worker alike:

- **exposure**: a treatment customer is exposed by a ``Promotion Viewed`` of one of the
  campaign's offers (joined to its decision: the item names campaign, arm and variant); a
  control customer by a decision that would have shown one of the campaign's offers but for
  the control arm (``Decision.control``). Only the first exposure counts: it fixes the
  customer's arm and starts the attribution window.
- **KPI**: an event named as one of the campaign's KPIs (the primary, then the guardrails:
  ``Catalog.kpis``) whose ``where`` holds, from an exposed customer, timestamped within
  ``within_days`` after the first exposure. A conversion KPI's value is 0/1 (converted once);
  a ``value`` KPI sums that number property per customer.

Customers are keyed by their stable experiment id (``Profile.experiment_key``), so the arm
a visitor had before login is kept after it. Per campaign, arm (``control``, the variant id,
or ``treatment``) and KPI the counts are kept as **daily deltas** (``Sums`` per UTC day of
the event that changed them): their running total up to day *d* is the campaign's state at
the end of day *d* (sequential analysis reads it), the total over all days the state now.
The pre-exposure covariate (CUPED) is not collected yet: ``pre`` sums stay 0.

Counts are plain sums (``Sums``), turned into ``statistics.ArmCounts`` when read, so the
ingest path does not load scipy. State is saved as one state row per campaign
(``experiment/<campaign>``, msgpack) and rebuilt identically by a replay of the logs.
Recording the same exposure twice changes nothing (only the first counts), so a restart may
re-record decisions logged around its snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import cel
import msgspec

from nextbest.catalog.compiled import Catalog, CompiledKpi
from nextbest.decide.model import Decision
from nextbest.events.model import Event
from nextbest.events.names import EventName
from nextbest.rules.expression import RuleOutcome

__all__ = [
    "CONTROL",
    "DAY",
    "EXPERIMENT_ROW",
    "TREATMENT",
    "CampaignCounters",
    "ExperimentCounters",
    "Exposure",
    "Sums",
    "decode_counters",
]

#: the state rows' kind: ``experiment/<campaign>``
EXPERIMENT_ROW = "experiment"
CONTROL = "control"
#: the arm of a treated customer of a campaign without variants
TREATMENT = "treatment"
DAY = 86_400.0


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


class Exposure(msgspec.Struct, array_like=True, gc=False):
    """One exposed customer of one campaign: the arm, when first exposed, each KPI's value."""

    arm: str
    first: float
    values: list[float]


class CampaignCounters(msgspec.Struct, gc=False):
    """One campaign's state: its exposed customers and, per arm and KPI, daily deltas."""

    customers: dict[str, Exposure] = {}
    #: arm -> KPI index -> UTC day number -> the sums that changed that day
    days: dict[str, list[dict[int, Sums]]] = {}

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

    def totals(self, arm: str, kpi: int, upto_day: float = math.inf) -> Sums:
        """The arm's sums for KPI ``kpi`` at the end of day ``upto_day`` (default: now)."""
        out = Sums()
        per_kpi = self.days.get(arm)
        if per_kpi is not None and kpi < len(per_kpi):
            for day, sums in per_kpi[kpi].items():
                if day <= upto_day:
                    out.add(sums)
        return out

    def day_numbers(self) -> list[int]:
        return sorted({d for per_kpi in self.days.values() for b in per_kpi for d in b})


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CampaignCounters).decode
_decode_days = msgspec.msgpack.Decoder(dict[str, list[dict[int, Sums]]]).decode


def _canonical(state: CampaignCounters) -> tuple[Any, ...]:
    """``state`` in sorted order: the same counters whatever order customers came in."""
    return (
        sorted(state.customers.items()),
        [(arm, [sorted(b.items()) for b in state.days[arm]]) for arm in sorted(state.days)],
    )


def decode_counters(body: bytes) -> CampaignCounters:
    """A saved ``experiment/<campaign>`` row."""
    return _decode(body)


class ExperimentCounters:
    """Every campaign's counters; ``dirty`` the campaigns changed since the last save."""

    def __init__(self, catalog: Catalog) -> None:
        self.campaigns: dict[str, CampaignCounters] = {}
        self.dirty: set[str] = set()
        #: every campaign's row is to be rewritten (a rebuild)
        self.replace = False
        self.use(catalog)

    def use(self, catalog: Catalog) -> None:
        """Match KPI events and offers with ``catalog`` from now on."""
        #: event name -> (campaign, KPI index, KPI): the index KPI events are matched through
        by_event: dict[str, list[tuple[str, int, CompiledKpi]]] = {}
        self._kpi_count: dict[str, int] = {}
        for campaign, kpis in catalog.kpis.items():
            self._kpi_count[campaign] = len(kpis)
            for i, kpi in enumerate(kpis):
                by_event.setdefault(kpi.spec.event, []).append((campaign, i, kpi))
        self._by_event = by_event
        self._offer_campaign = {
            o.id: o.campaign.id for o in catalog.offers.values() if o.campaign is not None
        }

    def wants(self, event: Event) -> bool:
        """``event`` may change a counter (a view, or a KPI event of some campaign)."""
        name = event.name
        return name is not None and (name == EventName.PROMOTION_VIEWED or name in self._by_event)

    # ------------------------------------------------------------------ exposure
    def expose(self, campaign: str, arm: str, key: str, at: float) -> bool:
        """Expose customer ``key`` to ``campaign`` in ``arm`` at ``at``; False (nothing
        changed) if they were exposed already or the campaign has no KPI."""
        kpis = self._kpi_count.get(campaign)
        if kpis is None or not key:
            return False
        state = self.campaigns.get(campaign)
        if state is None:
            state = self.campaigns[campaign] = CampaignCounters()
        if key in state.customers:
            return False
        state.customers[key] = Exposure(arm, at, [0.0] * kpis)
        day = int(at // DAY)
        for i in range(kpis):
            state._bucket(arm, i, kpis, day).n += 1
        self.dirty.add(campaign)
        return True

    def record_decision(self, decision: Decision, key: str) -> None:
        """The control exposures of ``decision`` (made for customer ``key``)."""
        for offer in decision.control:
            campaign = self._offer_campaign.get(offer)
            if campaign is not None:
                self.expose(campaign, CONTROL, key, decision.timestamp)

    def observe(self, event: Event, key: str, decision: Decision | None) -> None:
        """Fold one event of customer ``key``: a treatment exposure (``Promotion Viewed``
        joined to ``decision``), a KPI event, or nothing."""
        if not key:
            return
        if event.name == EventName.PROMOTION_VIEWED and decision is not None:
            offer = event.properties.get("promotion_id")
            for item in decision.items:
                if item.offer_id == offer and item.campaign_id is not None:
                    self.expose(item.campaign_id, item.variant or TREATMENT, key, event.timestamp)
                    break
        matches = self._by_event.get(event.name or "") if event.name else None
        if matches:
            self._kpi(event, key, matches)

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
            bucket = state._bucket(
                exposure.arm, i, len(exposure.values), int(event.timestamp // DAY)
            )
            bucket.sum += new - old
            bucket.sum_squares += new * new - old * old
            self.dirty.add(campaign)

    # ------------------------------------------------------------------ state
    def take_changes(self, every: bool = False) -> tuple[list[tuple[str, bytes | None]], bool]:
        """The rows to save (campaign, msgpack body; ``every``: all of them) and whether
        every row is rewritten."""
        replace = self.replace or every
        names: Iterable[str] = self.campaigns if replace else sorted(self.dirty)
        rows = [(c, _encode(self.campaigns[c]) if c in self.campaigns else None) for c in names]
        self.dirty = set()
        self.replace = False
        return rows, replace

    def keep_changes(self, campaigns: Iterable[str], replace: bool) -> None:
        """A save failed: these rows are saved next time."""
        self.dirty.update(campaigns)
        self.replace = self.replace or replace

    def restore(self, rows: Iterable[tuple[str, bytes]]) -> None:
        for campaign, body in rows:
            self.campaigns[campaign] = _decode(body)

    def state(self) -> bytes:
        """Every campaign's counters, in one canonical encoding (for comparisons)."""
        return _encode([(c, _canonical(self.campaigns[c])) for c in sorted(self.campaigns)])

    def copy(self, customers: bool = False) -> dict[str, CampaignCounters]:
        """Every campaign's counters, decoupled from the live ones: the daily counts, and
        the exposed customers only if asked (millions of them: what results never need)."""
        if customers:
            return {c: _decode(_encode(self.campaigns[c])) for c in sorted(self.campaigns)}
        return {
            c: CampaignCounters(customers={}, days=_decode_days(_encode(self.campaigns[c].days)))
            for c in sorted(self.campaigns)
        }

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.campaigns))

    def get(self, campaign: str) -> CampaignCounters | None:
        return self.campaigns.get(campaign)
