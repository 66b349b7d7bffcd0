"""Deterministic assignment: a hash of the stable customer id and a salt, never a coin flip.

The key hashed is the customer's stable experiment id (``Profile.experiment_key``: the id the
customer was first seen with, kept through identify and alias), so the arm a visitor had
before login is the arm they have after it. The same customer lands in the same arm of a
campaign on every decision, on every host and after every restart; changing the salt
reshuffles. The bank-wide universal holdout uses its
own salt and sees no commercial offers at all.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
from collections.abc import Sequence

__all__ = ["HOLDOUT_SALT", "Arm", "assign", "bucket", "variant_index"]

HOLDOUT_SALT = "nextbest-universal-holdout"
_SCALE = float(1 << 64)


class Arm(enum.StrEnum):
    TREATMENT = "treatment"
    CONTROL = "control"
    HOLDOUT = "holdout"


def bucket(customer_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (customer_id, salt)."""
    digest = hashlib.blake2b(f"{salt}\x00{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(customer_id: str, salt: str, control_share: float) -> Arm:
    """CONTROL for the first ``control_share`` of buckets, TREATMENT for the rest."""
    if control_share > 0.0 and bucket(customer_id, salt) < control_share:
        return Arm.CONTROL
    return Arm.TREATMENT


def variant_index(position: float, control_share: float, bounds: Sequence[float]) -> int:
    """The variant of a treated customer whose ``bucket`` is ``position`` (at least
    ``control_share``): the treated buckets, uniform on ``[control_share, 1)``, rescaled to
    ``[0, 1)`` and split at ``bounds`` (cumulative weights, the last 1.0). The control
    share is set aside first, so adding a variant never moves a customer into control."""
    u = (position - control_share) / (1.0 - control_share) if control_share < 1.0 else 0.0
    return min(bisect.bisect_right(bounds, u), len(bounds) - 1)
