"""Deterministic assignment: a hash of the stable customer id and a salt, never a coin flip.

The same customer lands in the same arm of a campaign on every decision, on every host and
after every restart; changing the salt reshuffles. The bank-wide universal holdout uses its
own salt and sees no commercial offers at all.
"""

from __future__ import annotations

import enum
import hashlib

__all__ = ["HOLDOUT_SALT", "Arm", "assign", "bucket"]

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
