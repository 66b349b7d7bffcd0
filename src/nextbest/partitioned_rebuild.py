"""The live state of several fold workers rebuilt from the event log (``nextbest
rebuild-partitioned``): after Redis lost its data, or to start them on a log they did not
write (a migration, a deployment of one fold worker).

Every fold worker must be stopped, having logged what it folded (the partitions' positions
in the log are where they resume). The event log is folded in seq order by the embedded
engine (every profile in this one process's memory, as the single fold worker holds them),
then written to Redis as one new generation (``save_state(replace=True)``: readers see the
old state or the new one, never a mix): the profiles, the identity links with where they
were made, each customer's ``members`` row, every partition's positions (the log's), the
learned models and experiment counters with a model-writer position past the learning feed
as it is (its records are of events the log holds, learned by this fold already).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from nextbest.bus.port import EventBus
from nextbest.catalog.compiled import Catalog
from nextbest.engine import Engine
from nextbest.experiments.counters import ExperimentCounters
from nextbest.model_writer import LEARNING_ORIGINS, LEARNING_POSITION
from nextbest.profile_cache import LINKED_ROW, MEMBERS_ROW, Linked
from nextbest.routing import home
from nextbest.store.port import PartitionedLog, StateRow, StateStore, Stores
from nextbest.store.snapshot import (
    FOLD_ROW,
    ModelVersion,
    experiment_rows,
    learner_rows,
    link_row,
    profile_row,
    published_row,
)

__all__ = ["RebuildReport", "rebuild_partitioned_state"]

_encode = msgspec.msgpack.Encoder().encode


class RebuildReport(msgspec.Struct, frozen=True):
    events: int
    profiles: int
    links: int
    partitions: int


def rebuild_partitioned_state(
    catalog: Catalog,
    logs: Stores,
    state: StateStore,
    bus: EventBus,
    scratch: StateStore,
    wall: Callable[[], float] = time.time,
) -> RebuildReport:
    """Fold ``logs``' event log (the embedded engine, restoring from ``scratch``: an empty
    state store) and write what several fold workers resume from to ``state`` (Redis),
    replacing what it held."""
    log = logs.events
    if not isinstance(log, PartitionedLog):
        raise TypeError(f"{type(log).__name__} is not an event log several workers share")
    engine = Engine(catalog, logs._replace(state=scratch, close=lambda: None))
    count = bus.partitions
    rows: list[StateRow] = []
    profiles = list(engine.profiles())
    rows += [profile_row(p.customer_id, p) for p in profiles]
    links = engine.links()
    members: dict[str, list[tuple[str, str]]] = {}
    for kind, key, user in links:
        rows.append(link_row(kind, key, user))
        where = home(user, count)
        rows.append(StateRow(LINKED_ROW, f"{kind}:{key}", _encode(Linked(where, 0, where))))
        members.setdefault(user, []).append((kind, key))
    rows += [StateRow(MEMBERS_ROW, u, _encode(sorted(m))) for u, m in members.items()]
    logged = log.partition_positions()
    single = log.source_position()
    for p in range(count):
        at = str(logged.get(p, single)).encode()
        rows += [StateRow(FOLD_ROW, f"done-{p}", at), StateRow(FOLD_ROW, f"visible-{p}", at)]
    # the models and counters as the log teaches them; the model writer goes on after the
    # learning feed's end (its records are of events the log holds) and skips a record of
    # an event folded at or before a partition's logged position
    feed_end = bus.last_seq()
    position = logs.decisions.decision_log_position()
    rows += learner_rows(engine.learner.to_state(), position)
    rows.append(published_row(ModelVersion(feed_end, wall(), None)))
    counters = ExperimentCounters(catalog)
    counters.restore((c, _encode(k)) for c, k in engine.experiment_counters(customers=True).items())
    experiments = counters.take_changes(every=True)
    rows += experiment_rows(experiments, position)
    rows.append(StateRow(FOLD_ROW, LEARNING_POSITION, str(feed_end).encode()))
    origins = {p: logged.get(p, single) for p in range(count)}
    rows.append(StateRow(FOLD_ROW, LEARNING_ORIGINS, _encode(origins)))
    state.save_state(0, catalog.digest, rows, replace=True)
    report = RebuildReport(log.count(), len(profiles), len(links), count)
    engine.release()
    return report
