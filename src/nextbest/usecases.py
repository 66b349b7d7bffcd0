"""Named use cases over a store at rest, for the faces (CLI, later the console): replay,
models, export and off-policy evaluation; and over a running engine, a catalog reload. Faces
parse arguments and print; what is read, joined and computed is decided here, on top of
``bootstrap``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import msgspec

from nextbest.audit.model import Actor
from nextbest.auditing import catalog_change, catalog_change_failed, record_export
from nextbest.bootstrap import (
    MEMORY,
    POSTGRES_SCHEMES,
    build_engine,
    build_outbox_sender,
    open_stores,
)
from nextbest.catalog.compiled import Catalog
from nextbest.channels.sender import SendReport
from nextbest.decide.model import Decision
from nextbest.engine import IN_PROCESS, Engine, QuarantineReport, ReplayReport
from nextbest.erasure import ErasureReport
from nextbest.errors import (
    CatalogError,
    CatalogProblem,
    ConfigError,
    NextbestError,
    NotFound,
    ValidationError,
)
from nextbest.experiments.counters import CampaignCounters
from nextbest.experiments.report import (
    ExperimentList,
    ExperimentResult,
    campaign_result,
    summarize,
)
from nextbest.learn.calibration import calibration
from nextbest.learn.learner import PlacementModel
from nextbest.learn.logs import LoggedItem, join_rewards
from nextbest.learn.offline import OfflineReport, evaluate_candidate
from nextbest.service import Service
from nextbest.settings import Settings
from nextbest.store.catalog_files import load_catalog
from nextbest.store.export import ExportedOffer, read_logged_items, rewards_of, write_decisions
from nextbest.store.port import HeldMessage, OutboxMessage, OutboxState, Stores

__all__ = [
    "CatalogCheck",
    "CatalogReload",
    "Logged",
    "OutboxListing",
    "OutboxReplay",
    "check_catalog",
    "erase_in_store",
    "evaluate_policy",
    "experiment_list",
    "experiment_result",
    "experiment_results",
    "export_customer_of_store",
    "export_decisions",
    "list_experiments",
    "list_models",
    "list_outbox",
    "list_quarantine",
    "read_logged",
    "reload_catalog",
    "replay_outbox",
    "replay_quarantine",
    "replay_store",
    "send_outbox",
    "served_experiment",
]


def _existing(data: str) -> None:
    """NotFound for a SQLite file that is not there (a server's store is opened to be seen)."""
    if data != MEMORY and not data.startswith(POSTGRES_SCHEMES) and not Path(data).exists():
        raise NotFound(f"no store at {data}")


@contextmanager
def _opened(settings: Settings) -> Iterator[Engine]:
    """An engine on an existing store, released without saving."""
    _existing(settings.data)
    engine = build_engine(settings, freeze_gc=False)
    try:
        yield engine
    finally:
        engine.release()


class CatalogCheck(NamedTuple):
    """Every problem of a catalog (file, line, field path, reason; errors and warnings), and
    the compiled catalog unless an error refused it."""

    problems: list[CatalogProblem]
    catalog: Catalog | None

    @property
    def errors(self) -> list[CatalogProblem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[CatalogProblem]:
        return [p for p in self.problems if not p.is_error]


def check_catalog(location: str | Path, now: float | None = None) -> CatalogCheck:
    """Validate a catalog file or folder as ``nextbest check`` and a CI job do; ``now``:
    when it is checked (schedules that ended by then are warnings)."""
    try:
        catalog = load_catalog(location, now)
    except CatalogError as exc:
        return CatalogCheck(exc.problems, None)
    return CatalogCheck(catalog.warnings, catalog)


class CatalogReload(msgspec.Struct, frozen=True, kw_only=True):
    """What a catalog reload did (``POST /v1/admin/catalog/reload``, SIGHUP)."""

    #: the catalog version served before, and now
    previous: str
    version: str
    #: false: the catalog read is the one served, nothing was swapped
    changed: bool
    #: every profile was refolded from the event log (topics, profile settings or offers
    #: changed), ``events`` of them
    refolded: bool
    events: int
    #: the new catalog's warnings (``nextbest check`` prints the same)
    warnings: list[str]


def reload_catalog(
    engine: Service, location: str | Path, actor: Actor = IN_PROCESS
) -> CatalogReload:
    """Re-read the catalog at ``location``, check it, and swap it into the running
    ``engine`` only if it checks (``Engine.reload``: atomically, learned state kept). A
    catalog with errors raises CatalogError with every problem, and the engine goes on with
    the catalog it had. Schedules are judged at the engine's now.

    A change is recorded in the audit log, by ``actor``, before it is made (with the diff:
    ``auditing.catalog_change``); a change that then fails is recorded as failed."""
    try:
        catalog = load_catalog(location, now=engine.clock.now())
    except CatalogError as exc:
        errors = "; ".join(str(p) for p in exc.problems if p.is_error)
        raise CatalogError(
            exc.problems,
            f"catalog {location} not reloaded, still serving {engine.catalog.version}: {errors}",
        ) from exc
    changes = catalog_change(engine, actor, catalog)
    try:
        report = engine.reload(catalog)
    except NextbestError as exc:
        if changes:
            catalog_change_failed(engine, actor, catalog, exc.message)
        raise
    return CatalogReload(
        previous=report.previous,
        version=report.version,
        changed=report.changed,
        refolded=report.refolded,
        events=report.events,
        warnings=[str(w) for w in catalog.warnings],
    )


def erase_in_store(settings: Settings, customer_id: str, actor: Actor) -> ErasureReport:
    """Erase a customer from a store at rest (``nextbest.erasure``; on a running server,
    ``DELETE /v1/customers/{id}``: a second process would keep them in its memory and save
    them back), then save the state."""
    with _opened(settings) as engine:
        try:
            return engine.erase_customer(customer_id, actor)
        finally:
            engine.close()


def export_customer_of_store(settings: Settings, customer_id: str, actor: Actor) -> bytes:
    """Everything a store holds about a customer, as JSON (``nextbest.erasure``)."""
    with _opened(settings) as engine:
        return msgspec.json.encode(engine.export_customer(customer_id, actor))


def replay_store(settings: Settings, write: bool = False) -> ReplayReport:
    """Rebuild every profile and model from the logs and compare with the saved state;
    ``write`` replaces the saved state by the rebuilt one."""
    with _opened(settings) as engine:
        if not write:
            return engine.replay()
        try:
            return engine.rebuild()
        finally:
            engine.close()  # saves the rebuilt state; the release after it does nothing


def list_quarantine(settings: Settings, limit: int | None = None) -> tuple[int, list[HeldMessage]]:
    """How many messages the store's quarantine holds, and the oldest ``limit`` of them."""
    with _opened(settings) as engine:
        return engine.quarantine.held_count(), engine.quarantined(0, limit)


def replay_quarantine(settings: Settings) -> QuarantineReport:
    """Let in the held messages the vocabulary now accepts (a store at rest: on a running
    server, ``POST /v1/admin/quarantine/replay`` does the same), and save the state."""
    with _opened(settings) as engine:
        try:
            return engine.replay_quarantine()
        finally:
            engine.close()  # saves what was folded; the release after it does nothing


def list_models(settings: Settings, top: int = 5) -> list[PlacementModel]:
    """Each learning placement's model as the store has it, with the calibration of its
    logged click and conversion estimates against what customers did."""
    with _opened(settings) as engine:
        models = engine.models(top)
    if settings.data == MEMORY:
        return models
    found = calibration(read_logged(settings.catalog, settings.data).items)
    return [
        msgspec.structs.replace(m, calibration=[c for c in found if c.placement == m.placement])
        for m in models
    ]


class Logged(NamedTuple):
    """A store's decisions within a period and their shown items joined to rewards."""

    decisions: list[Decision]
    items: list[LoggedItem]


def read_logged(
    catalog: str, data: str, since: float | None = None, until: float | None = None
) -> Logged:
    """Decisions with ``since <= timestamp < until`` and their items' clicks and conversions
    (joined through ``decision_id``, across stitched identities)."""
    _existing(data)
    stores = open_stores(data)
    try:
        decisions = list(stores.decisions.decisions(since, until))
        events = (s.event for s in stores.events.scan(0))
        items = join_rewards(decisions, events, load_catalog(catalog))
    finally:
        stores.close()
    return Logged(decisions, items)


def export_decisions(
    catalog: str,
    data: str,
    out: str | Path,
    since: float | None,
    until: float | None,
    actor: Actor = IN_PROCESS,
    now: float | None = None,
) -> int:
    """Write the decision log (a row per shown item, with its rewards) to Parquet; rows.
    Recorded in the store's audit log first, as done by ``actor`` at ``now`` (default: the
    wall clock)."""
    _existing(data)
    stores = open_stores(data)
    try:
        details = {"out": str(out), "since": since, "until": until}
        record_export(stores.audit, actor, time.time() if now is None else now, details)
    finally:
        stores.close()
    logged = read_logged(catalog, data, since, until)
    offers = {
        o.id: ExportedOffer(o.kind.value, o.campaign.id if o.campaign else None, o.spec.value)
        for o in load_catalog(catalog).offers.values()
    }
    return write_decisions(logged.decisions, out, rewards_of(logged.items), offers)


def evaluate_policy(
    candidate: str,
    logs: str,
    catalog: str,
    *,
    since: float | None = None,
    until: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 12345,
    fatigue: bool = True,
    fatigue_days: float | None = None,
) -> OfflineReport:
    """Off-policy evaluation of a candidate catalog on a store's logs or an exported
    ``.parquet`` file (IPS, SNIPS, DR with bootstrap intervals)."""
    if logs.endswith(".parquet"):
        if since is not None or until is not None:
            raise ValidationError("--since/--until apply to a store, not a file", "$.since")
        items = read_logged_items(logs)
    else:
        items = read_logged(catalog, logs, since, until).items
    return evaluate_candidate(
        items,
        load_catalog(candidate),
        random_state=seed,
        n_bootstrap=n_bootstrap,
        fatigue=fatigue,
        fatigue_days=fatigue_days,
    )


# ------------------------------------------------------------------ experiments
def experiment_result(
    catalog: Catalog, counters: dict[str, CampaignCounters], campaign: str
) -> ExperimentResult:
    """One campaign's results (NotFound for a campaign the catalog does not have)."""
    spec = catalog.campaigns.get(campaign)
    if spec is None:
        raise NotFound(f"no campaign {campaign!r} in catalog {catalog.version}")
    return campaign_result(
        spec,
        catalog.kpis.get(campaign, []),
        counters.get(campaign),
        segment_names=catalog.segment_names,
    )


def experiment_list(catalog: Catalog, counters: dict[str, CampaignCounters]) -> ExperimentList:
    """Every campaign of the catalog, its exposed customers and verdict."""
    return ExperimentList(
        experiments=[
            summarize(experiment_result(catalog, counters, c)) for c in sorted(catalog.campaigns)
        ]
    )


def list_experiments(service: Service) -> ExperimentList:
    """``experiment_list`` on a running engine's counters."""
    return experiment_list(service.catalog, service.experiment_counters())


def served_experiment(service: Service, campaign: str) -> ExperimentResult:
    """``experiment_result`` on a running engine's counters."""
    return experiment_result(service.catalog, service.experiment_counters(), campaign)


def experiment_results(
    settings: Settings, campaign: str | None = None
) -> ExperimentList | ExperimentResult:
    """From a store at rest (the CLI): one campaign's results, or every campaign's verdict."""
    with _opened(settings) as engine:
        counters = engine.experiment_counters()
        catalog = engine.catalog
    if campaign is None:
        return experiment_list(catalog, counters)
    return experiment_result(catalog, counters, campaign)


# ---------------------------------------------------------------- the outbox
@contextmanager
def _stores(settings: Settings) -> Iterator[Stores]:
    """The stores of an existing store (no engine: the outbox alone is read or written)."""
    _existing(settings.data)
    stores = open_stores(settings.data, synchronous=settings.sqlite_synchronous)
    try:
        yield stores
    finally:
        stores.close()


class OutboxListing(NamedTuple):
    """How many outbound messages are in each state, and the oldest ``limit`` listed."""

    counts: dict[OutboxState, int]
    messages: list[OutboxMessage]


def list_outbox(
    settings: Settings, state: OutboxState | None = None, limit: int | None = None
) -> OutboxListing:
    """The store's outbox: counts by state, and its messages (in ``state``), oldest first."""
    with _stores(settings) as stores:
        return OutboxListing(stores.outbox.counts(), stores.outbox.messages(state, 0, limit))


class OutboxReplay(NamedTuple):
    """Dead messages made pending again, and each id named that was not (why)."""

    replayed: list[int]
    skipped: dict[int, str]


#: dead letters replayed per statement by ``--all-dead``
_REPLAY_PAGE = 1_000


def replay_outbox(
    settings: Settings, ids: Collection[int] = (), *, all_dead: bool = False, now: float
) -> OutboxReplay:
    """Make dead messages pending again, due ``now`` with a fresh retry schedule: ``ids``,
    or every dead one (``all_dead``). A running sender picks them up on its next look."""
    if bool(ids) == all_dead:
        raise ValidationError("name the message ids to replay, or all dead ones", "$.ids")
    replayed: list[int] = []
    skipped: dict[int, str] = {}
    with _stores(settings) as stores:
        outbox = stores.outbox
        if all_dead:
            after = 0
            while page := outbox.messages(OutboxState.DEAD, after, _REPLAY_PAGE):
                replayed += outbox.replay([m.id for m in page], now)
                after = page[-1].id
            return OutboxReplay(replayed, skipped)
        replayed = outbox.replay(ids, now)
        for i in sorted(set(ids) - set(replayed)):
            found = outbox.messages(None, i - 1, 1)
            skipped[i] = (
                f"{found[0].state.value}, not dead" if found and found[0].id == i else "not found"
            )
    return OutboxReplay(replayed, skipped)


def send_outbox(
    settings: Settings,
    stop: threading.Event,
    *,
    once: bool = False,
    batch: int = 16,
    lease_seconds: float | None = None,
    poll_seconds: float = 1.0,
) -> SendReport:
    """Deliver the store's outbox to the configured webhooks until ``stop`` is set (or, with
    ``once``, until nothing is due now); what was done, summed (a loop that runs until
    stopped reports nothing: its lines are logged). ConfigError when no webhook is
    configured (every message would go dead)."""
    if not settings.webhooks:
        raise ConfigError(
            "no webhook configured: set NEXTBEST_WEBHOOK_<NAME>_URL and "
            "NEXTBEST_WEBHOOK_<NAME>_SECRET (docs/outbox.md)"
        )
    with _stores(settings) as stores:
        sender = build_outbox_sender(
            settings,
            stores.outbox,
            batch=batch,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
        )
        if not once:
            sender.start()
            try:
                while not stop.wait(0.5):  # a signal handler may set it
                    if not sender.running:  # the loop ended by an error: stop() raises it
                        break
            finally:
                sender.stop()
            return SendReport()
        total = SendReport()
        try:
            while not stop.is_set():
                report = sender.send_due()
                total = SendReport(*(a + b for a, b in zip(total, report, strict=True)))
                if not report.claimed:
                    break
        finally:
            sender.stop()
        return total
