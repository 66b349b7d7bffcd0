"""The click-propensity prior before any learning: base CTR lifted by decayed interest.

p = base_ctr * (1 + lift * s / (s + k)), where s is the decayed topic score and k the score
at which half the lift is reached. With no interest p is the base CTR; with strong interest it
tends to base_ctr * (1 + lift). Clamped below 0.99.
"""

from __future__ import annotations

__all__ = ["click_prior"]


def click_prior(
    base_ctr: float, interest_score: float, lift: float, half_saturation: float
) -> float:
    s = max(0.0, interest_score)
    p = base_ctr * (1.0 + lift * s / (s + half_saturation))
    return min(p, 0.99)
