"""What a policy's figures mean against the baselines run on the same world and seed.

- **True incremental conversions**: a policy's conversions (organic plus after a click)
  minus those of ``none`` (nobody sees anything) on the same customers: what showing
  things added. (``Metrics.incremental_conversions`` is the campaigns' own estimate from
  their control arms, which only sees the campaigns' topics.)
- **Clicks / oracle clicks**: a policy's clicks as a share of the oracle's; the same for
  commercial offers alone (``commercial_vs_oracle``), apart from the service messages'
  clicks (the overdraft warning's), which every policy but random shows first.
- **Gap closed**: the share of the gap between ``greedy_recent`` (the bank's rule of thumb)
  and the oracle that a policy closes, ``(policy - greedy) / (oracle - greedy)``, in true
  incremental conversions and, free of the conversion draws' noise, in expected conversions
  after a click (``Metrics.expected_conversions``; organic conversions barely differ between
  policies on the same customers).
- **The oracle's margin**: the oracle's clicks over random's and over static's. A world in
  which the oracle barely beats random is a broken instrument: every policy would look
  alike whatever it did (docs/worlds.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from nextbest.sim.loop import Metrics

__all__ = [
    "OracleMargin",
    "clicks_vs_oracle",
    "commercial_vs_oracle",
    "describe_margin",
    "expected_clicks_vs_oracle",
    "gap_closed",
    "oracle_margin",
    "true_incremental",
]


class OracleMargin(msgspec.Struct, frozen=True, kw_only=True):
    """The oracle's clicks over random's and static's (None: that policy did not run or had
    no click)."""

    oracle_clicks: int
    random_clicks: int | None = None
    static_clicks: int | None = None
    over_random: float | None = None
    over_static: float | None = None


def _ratio(a: float, b: float | None) -> float | None:
    return a / b if b else None


def oracle_margin(results: Mapping[str, Metrics]) -> OracleMargin | None:
    """The oracle's margin, or None when the oracle did not run."""
    oracle = results.get("oracle")
    if oracle is None:
        return None
    rnd, static = results.get("random"), results.get("static")
    random_clicks = rnd.clicks if rnd is not None else None
    static_clicks = static.clicks if static is not None else None
    return OracleMargin(
        oracle_clicks=oracle.clicks,
        random_clicks=random_clicks,
        static_clicks=static_clicks,
        over_random=_ratio(oracle.clicks, random_clicks),
        over_static=_ratio(oracle.clicks, static_clicks),
    )


def describe_margin(margin: OracleMargin | None) -> str:
    """One line: the oracle's clicks over random's and static's."""
    if margin is None:
        return "oracle not run: no margin"

    def times(r: float | None) -> str:
        return f"{r:.2f}x" if r is not None else "-"

    return (
        f"oracle margin (clicks): {times(margin.over_random)} random, "
        f"{times(margin.over_static)} static"
    )


def true_incremental(results: Mapping[str, Metrics]) -> dict[str, int]:
    """Each policy's conversions minus ``none``'s; empty when ``none`` did not run."""
    none = results.get("none")
    if none is None:
        return {}
    return {name: m.conversions_total - none.conversions_total for name, m in results.items()}


def clicks_vs_oracle(results: Mapping[str, Metrics]) -> dict[str, float | None]:
    """Each policy's clicks over the oracle's (None: no oracle, or it had no click)."""
    oracle = results.get("oracle")
    clicks = oracle.clicks if oracle is not None else None
    return {name: _ratio(m.clicks, clicks) for name, m in results.items()}


def expected_clicks_vs_oracle(results: Mapping[str, Metrics]) -> dict[str, float | None]:
    """Each policy's expected clicks (the sum of the true click probabilities of what it
    showed) over the oracle's: the same comparison as ``clicks_vs_oracle`` without the
    noise of the click draws, which at a few hundred clicks a run is +-0.05."""
    oracle = results.get("oracle")
    expected = oracle.expected_clicks if oracle is not None else None
    return {name: _ratio(m.expected_clicks, expected) for name, m in results.items()}


def commercial_vs_oracle(results: Mapping[str, Metrics]) -> dict[str, float | None]:
    """Each policy's commercial clicks over the oracle's (None: no oracle, or it had none)."""
    oracle = results.get("oracle")
    clicks = oracle.commercial_clicks if oracle is not None else None
    return {name: _ratio(m.commercial_clicks, clicks) for name, m in results.items()}


def gap_closed(policy: float | None, base: float | None, oracle: float | None) -> float | None:
    """The share of the gap from ``base`` to ``oracle`` that ``policy`` closes (negative
    below ``base``); None when a figure is missing or the oracle is not above ``base``."""
    if policy is None or base is None or oracle is None or oracle <= base:
        return None
    return (policy - base) / (oracle - base)
