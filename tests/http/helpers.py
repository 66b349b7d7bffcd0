"""Helpers for the HTTP face tests: message builders timed from the server's real clock."""

from __future__ import annotations

import itertools
import time
from typing import Any

from nextbest.experiments import Arm, assign
from tests.support import message

_users = itertools.count(1)


def now() -> float:
    """The live server runs on the system clock, so messages are timed from it."""
    return time.time()


def msg(kind: str, **fields: Any) -> dict[str, Any]:
    """A Segment-shaped message (explicit nulls, +00:00 timestamp), by default timed now."""
    at = fields.pop("at", None)
    return message(kind, at=now() if at is None else at, **fields)


def fresh_user(prefix: str = "user") -> str:
    return f"{prefix}-{next(_users)}"


def user_in_arm(arm: Arm, salt: str = "mortgage_q4", control_share: float = 0.1) -> str:
    """The first ``mortgage-fan-N`` that the campaign's hash puts in ``arm``: deterministic."""
    for i in itertools.count():
        user = f"mortgage-fan-{i}"
        if assign(user, salt, control_share) is arm:
            return user
    raise AssertionError("unreachable")
