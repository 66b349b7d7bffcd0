"""What the HTTP face serves: the embedded ``Engine`` (``serve --role all``) or a stateless
``ApiWorker`` (``serve --role api``). Both satisfy this Protocol; the face sees nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from nextbest.audit.model import Actor
from nextbest.callbacks import CallbackDesk
from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock, ClockKind
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.engine import QuarantineReport, ReloadReport
from nextbest.erasure import CustomerExport, ErasureReport
from nextbest.events.model import EventType
from nextbest.events.parse import Limits, Parsed
from nextbest.experiments.counters import CampaignCounters
from nextbest.guard.senders import Sender
from nextbest.ingestion import IngestRequest, IngestResult
from nextbest.learn.learner import Learner
from nextbest.profile.model import Profile
from nextbest.scaled_erasure import ErasureOutcome
from nextbest.store.port import AuditLog, HeldMessage, Quarantine

__all__ = ["Service"]

T = TypeVar("T")


class Service(Protocol):
    catalog: Catalog
    clock: Clock
    limits: Limits
    quarantine: Quarantine
    on_feedback: Callable[[bool], None] | None

    @property
    def clock_kind(self) -> ClockKind: ...

    @property
    def callbacks(self) -> CallbackDesk:
        """Expert call-backs; NotServed where this kind of server does not serve them."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def audit(self) -> AuditLog:
        """The audit log (``nextbest.auditing`` records reads and changes in it)."""
        ...

    @property
    def snapshot_due(self) -> bool: ...

    @property
    def profile_count(self) -> int: ...

    @property
    def pending_views(self) -> int: ...

    @property
    def pending_conversions(self) -> int: ...

    @property
    def learner(self) -> Learner: ...

    def wall_now(self) -> float: ...

    def require_event_time(self, path: str = ...) -> None: ...

    def read_batch(self, body: bytes) -> Parsed: ...

    def read_message(self, kind: EventType, body: bytes) -> Parsed: ...

    def submit_with(
        self, request: IngestRequest, answer: Callable[[IngestResult | BaseException], None]
    ) -> None: ...

    def decide_as(
        self,
        sender: Sender,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        now: float | None = None,
    ) -> Decision: ...

    def decision(self, decision_id: str) -> Decision | None: ...

    def read_profile(self, customer_id: str, read: Callable[[Profile, float], T]) -> T | None:
        """``read`` of the customer's live profile as of now (None: no profile)."""
        ...

    def profile_view(self, customer_id: str) -> dict[str, Any] | None: ...

    def probe(self) -> list[tuple[str, str | None]]: ...

    def flush(self) -> None: ...

    def snapshot(self) -> None: ...

    def close(self) -> None: ...

    def quarantined(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]: ...

    def replay_quarantine(self, batch: int = ...) -> QuarantineReport: ...

    def reload(self, catalog: Catalog) -> ReloadReport: ...

    def experiment_counters(self, customers: bool = False) -> dict[str, CampaignCounters]: ...

    def erase_customer(self, customer_id: str, actor: Actor) -> ErasureReport: ...

    def export_customer(self, customer_id: str, actor: Actor) -> CustomerExport: ...

    def erasure_status(self, receipt: str) -> ErasureOutcome | None: ...
