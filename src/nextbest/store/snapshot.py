"""The snapshot format: how live state is saved as rows of the state port, and read back.

Rows: ``profile/<customer key>`` (a msgpack Profile), ``anon/<anonymousId>`` and
``alias/<previous id>`` (the userId linked, UTF-8), ``learner/learner`` (the learner's own
bytes) with its companion ``learner/decision_log_position`` (where the decision log ended when
the learner was saved: a restart counts only the decisions logged after it). A fold worker
(``serve --role fold``) adds ``fold/position``, the bus's stream sequence folded up to (saved
with the profiles it produced, in one write: the cursor its consumer restarts from, and what an
API worker waits for to read its own writes), and ``learner/published`` (the model copy's
version and when it was saved, for the API workers that reload it). Experiment counters are
``experiment/<campaign>`` rows (a campaign's counts) and ``exposure/<campaign>/<customer>``
rows (one exposed customer each: ``experiments.counters``) with their companion
``experiment-log/decision_log_position`` (the control exposures logged after it are recorded
again on restart; once more changes nothing). A snapshot is a cache: one
folded under another catalog, or unreadable, is replayed from the logs instead.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import msgspec

from nextbest.experiments.counters import EXPERIMENT_ROW, EXPOSURE_ROW, CounterChanges
from nextbest.guard.alert import DueAlert, decode_alerts, encode_alerts
from nextbest.profile.book import PROFILE_ROW
from nextbest.profile.identity import LinkKind
from nextbest.profile.model import Profile
from nextbest.store.port import SavedState, StateRow

__all__ = [
    "ALERTS",
    "FOLD_ROW",
    "LEARNER_ROW",
    "POSITION",
    "PUBLISHED",
    "ModelVersion",
    "Snapshot",
    "alerts_row",
    "experiment_rows",
    "learner_rows",
    "link_row",
    "position_row",
    "profile_row",
    "published_row",
    "read_snapshot",
]

LEARNER_ROW = "learner"
#: a fold worker's rows: ``fold/position``, the bus stream sequence folded up to
FOLD_ROW = "fold"
POSITION = "position"
#: ``fold/alerts``: the fraud alerts a fold worker made, saved with the state that made them
#: and enqueued in the outbox after that save (deleted by a later save once enqueued)
ALERTS = "alerts"
#: ``learner/published``: the version of the model copy saved with it, and when
PUBLISHED = "published"
#: the experiment rows' companion kind: ``experiment-log/decision_log_position``
EXPERIMENT_LOG = "experiment-log"
#: the learner row's companion: where the decision log ended when the learner was saved
_DECISION_LOG = "decision_log_position"

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


class Snapshot(NamedTuple):
    """Saved state as a restart reads it."""

    #: the event log position it was folded up to
    seq: int
    profiles: dict[str, Profile]
    #: (kind, key, userId) identity links
    links: list[tuple[str, str, str]]
    learner: bytes | None
    #: the decision log position the learner's budgets count up to (None: count the whole log)
    decision_log_position: int | None
    #: the bus stream sequence folded up to (0: none, or not a fold worker's state)
    fold_position: int = 0
    #: (campaign, msgpack counts) rows
    experiments: tuple[tuple[str, bytes], ...] = ()
    #: the decision log position the saved counters' control exposures count up to (None:
    #: count the whole log)
    experiments_position: int | None = None
    #: (``exposure_key``, msgpack exposure) rows
    exposures: tuple[tuple[str, bytes], ...] = ()
    #: fraud alerts a fold worker saved with the state and may not have enqueued yet
    alerts: tuple[DueAlert, ...] = ()


class ModelVersion(msgspec.Struct, frozen=True):
    """``learner/published``: the model copy's version (counted up by its one writer), the
    writer's wall clock when it saved it (how old a reader's copy is) and when the oldest
    learning in it was folded (None: not known), which is how stale the copy is when a
    reader starts deciding with it."""

    version: int
    saved_at: float
    changed_at: float | None = None


def profile_row(key: str, profile: Profile | None) -> StateRow:
    return StateRow(PROFILE_ROW, key, None if profile is None else _encode(profile))


def link_row(kind: str, key: str, target: str | None) -> StateRow:
    return StateRow(kind, key, None if target is None else target.encode())


def learner_rows(body: bytes, decision_log_position: int) -> list[StateRow]:
    return [
        StateRow(LEARNER_ROW, LEARNER_ROW, body),
        StateRow(LEARNER_ROW, _DECISION_LOG, str(decision_log_position).encode()),
    ]


def experiment_rows(changes: CounterChanges, decision_log_position: int) -> list[StateRow]:
    return [
        *(StateRow(EXPERIMENT_ROW, c, body) for c, body in changes.campaigns),
        *(StateRow(EXPOSURE_ROW, key, body) for key, body in changes.exposures),
        StateRow(EXPERIMENT_LOG, _DECISION_LOG, str(decision_log_position).encode()),
    ]


def position_row(seq: int) -> StateRow:
    return StateRow(FOLD_ROW, POSITION, str(seq).encode())


def alerts_row(alerts: list[DueAlert], key: str = ALERTS) -> StateRow:
    """``fold/<key>``: the alerts due, or the row deleted when there are none."""
    return StateRow(FOLD_ROW, key, encode_alerts(alerts) if alerts else None)


def published_row(version: ModelVersion) -> StateRow:
    return StateRow(LEARNER_ROW, PUBLISHED, msgspec.json.encode(version))


def read_snapshot(saved: SavedState | None, version: str) -> Snapshot | None:
    """The saved state if it was folded under catalog ``version`` and every row reads; None
    otherwise (the caller replays the logs: a snapshot is a cache). The learner's own bytes
    are the learner's to read."""
    if saved is None or saved.version != version:
        return None
    try:
        return _read_rows(saved)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, _Unreadable):
        return None


class _Unreadable(Exception):
    """A row this version does not know."""


_LINKS = frozenset(k.value for k in LinkKind)


def _read_rows(saved: SavedState) -> Snapshot:
    profiles: dict[str, Profile] = {}
    links: list[tuple[str, str, str]] = []
    learner: bytes | None = None
    position: int | None = None
    folded = 0
    experiments: list[tuple[str, bytes]] = []
    exposures: list[tuple[str, bytes]] = []
    experiments_position: int | None = None
    alerts: list[DueAlert] = []
    for row in saved.rows:
        if row.body is None:
            continue
        if row.kind == PROFILE_ROW:
            profiles[row.key] = _decode_profile(row.body)
        elif row.kind == LEARNER_ROW and row.key == _DECISION_LOG:
            with contextlib.suppress(ValueError):  # unreadable: count the whole log
                position = int(row.body)
        elif row.kind == LEARNER_ROW and row.key == LEARNER_ROW:
            learner = row.body
        elif row.kind == LEARNER_ROW and row.key == PUBLISHED:
            continue  # for the readers of the model copy
        elif row.kind == FOLD_ROW and row.key == POSITION:
            folded = int(row.body)
        elif row.kind == FOLD_ROW and row.key == ALERTS:
            alerts = decode_alerts(row.body)
        elif row.kind == EXPERIMENT_ROW:
            experiments.append((row.key, row.body))
        elif row.kind == EXPOSURE_ROW:
            exposures.append((row.key, row.body))
        elif row.kind == EXPERIMENT_LOG and row.key == _DECISION_LOG:
            experiments_position = int(row.body)
        elif row.kind in _LINKS:
            links.append((row.kind, row.key, row.body.decode()))
        else:
            raise _Unreadable(f"{row.kind}/{row.key}")
    if experiments_position is None:
        experiments = exposures = []  # counters without their position: recount the logs
    return Snapshot(
        saved.seq,
        profiles,
        links,
        learner,
        position,
        folded,
        tuple(experiments),
        experiments_position,
        tuple(exposures),
        tuple(alerts),
    )
