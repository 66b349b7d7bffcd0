"""The decision log as a Parquet file for analysts (pyarrow): one row per shown item, with
its rewards (``clicked``, ``converted``: see ``learn.logs``).

A decision that showed nothing still gets one row (``position`` and ``offer_id`` null), so
coverage can be counted. Lists (candidates, the urgent ones, the fallback content that could
fill empty slots, control exposures, segments) stay lists and the
features a map, so a notebook can re-score or evaluate a policy offline from the file alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nextbest.decide.model import Decision, PropensityKind
from nextbest.errors import ValidationError
from nextbest.learn.logs import LoggedItem

__all__ = ["DECISION_SCHEMA", "decision_rows", "read_logged_items", "write_decisions"]

#: (decision_id, offer_id) -> (clicked, converted)
Rewards = Mapping[tuple[str, str], tuple[bool, bool]]

DECISION_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("customer_id", pa.string()),
        ("placement", pa.string()),
        ("catalog_version", pa.string()),
        ("model_version", pa.string()),
        ("position", pa.int16()),
        ("offer_id", pa.string()),
        ("kind", pa.string()),
        ("campaign_id", pa.string()),
        ("score", pa.float64()),
        ("p_click", pa.float64()),
        ("p_convert", pa.float64()),
        ("propensity", pa.float64()),
        ("propensity_kind", pa.string()),
        ("clicked", pa.bool_()),
        ("converted", pa.bool_()),
        ("candidates", pa.list_(pa.string())),
        ("urgent", pa.list_(pa.string())),
        ("fallback", pa.list_(pa.string())),
        ("control", pa.list_(pa.string())),
        ("segments", pa.list_(pa.string())),
        ("features", pa.map_(pa.string(), pa.float64())),
    ]
)
_BATCH = 10_000
#: the columns offline evaluation reads
_NEEDED = frozenset(
    {
        "decision_id",
        "timestamp",
        "customer_id",
        "placement",
        "position",
        "offer_id",
        "propensity",
        "clicked",
        "converted",
        "candidates",
        "features",
        "model_version",
    }
)


def decision_rows(decision: Decision, rewards: Rewards | None = None) -> list[dict[str, Any]]:
    base = {
        "decision_id": decision.decision_id,
        "timestamp": int(decision.timestamp * 1000),
        "customer_id": decision.customer_id,
        "placement": decision.placement,
        "catalog_version": decision.catalog_version,
        "model_version": decision.model_version,
        "candidates": decision.candidates,
        "urgent": decision.urgent,
        "fallback": decision.fallback,
        "control": decision.control,
        "segments": decision.segments,
        "features": list(decision.features.items()),
    }
    if not decision.items:
        return [base]
    return [
        {
            **base,
            "position": item.position,
            "offer_id": item.offer_id,
            "kind": item.kind,
            "campaign_id": item.campaign_id,
            "score": item.score,
            "p_click": item.p_click,
            "p_convert": item.p_convert,
            "propensity": item.propensity,
            "propensity_kind": item.propensity_kind,
            **_rewarded(rewards, decision.decision_id, item.offer_id),
        }
        for item in decision.items
    ]


def _rewarded(rewards: Rewards | None, decision_id: str, offer_id: str) -> dict[str, Any]:
    if rewards is None:
        return {}
    clicked, converted = rewards.get((decision_id, offer_id), (False, False))
    return {"clicked": clicked, "converted": converted}


def write_decisions(
    decisions: Iterable[Decision], path: str | Path, rewards: Rewards | None = None
) -> int:
    """Stream ``decisions`` into a Parquet file at ``path``; the number of rows written."""
    try:
        return _write(decisions, path, rewards)
    except (OSError, pa.ArrowException) as exc:
        raise ValidationError(f"cannot write {path}: {exc}", "$.out") from exc


def _write(decisions: Iterable[Decision], path: str | Path, rewards: Rewards | None) -> int:
    rows: list[dict[str, Any]] = []
    written = 0
    with pq.ParquetWriter(str(path), DECISION_SCHEMA, compression="zstd") as writer:
        for decision in decisions:
            rows.extend(decision_rows(decision, rewards))
            if len(rows) >= _BATCH:
                writer.write_table(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA))
                written += len(rows)
                rows = []
        if rows or not written:
            writer.write_table(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA))
            written += len(rows)
    return written


def _propensity_kind(value: str | None, path: str | Path, row: int) -> PropensityKind:
    try:
        return PropensityKind(value or PropensityKind.EXACT)
    except ValueError:
        kinds = ", ".join(k.value for k in PropensityKind)
        raise ValidationError(
            f"{path}: row {row} has propensity_kind {value!r}, not one of {kinds}",
            f"$.logs[{row}].propensity_kind",
        ) from None


def read_logged_items(path: str | Path) -> list[LoggedItem]:
    """The shown items of an exported file, for offline evaluation (rows without an item,
    or without rewards, are skipped)."""
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise ValidationError(f"cannot read {path}: {exc}", "$.logs") from exc
    missing = _NEEDED - set(table.column_names)
    if missing:
        raise ValidationError(f"{path} lacks columns {sorted(missing)}", "$.logs")
    out: list[LoggedItem] = []
    for i, row in enumerate(table.to_pylist()):
        if row["offer_id"] is None or row["clicked"] is None or row["timestamp"] is None:
            continue
        out.append(
            LoggedItem(
                decision_id=row["decision_id"],
                timestamp=row["timestamp"].timestamp(),
                customer_id=row["customer_id"],
                placement=row["placement"],
                position=row["position"],
                offer_id=row["offer_id"],
                propensity=row["propensity"],
                propensity_kind=_propensity_kind(row.get("propensity_kind"), path, i),
                clicked=bool(row["clicked"]),
                converted=bool(row["converted"]),
                candidates=list(row["candidates"] or []),
                features=dict(row["features"] or []),
                model_version=row["model_version"] or "prior",
                # files written before these columns: no urgent messages, no fallback
                urgent=list(row.get("urgent") or []),
                p_click=row.get("p_click"),
                p_convert=row.get("p_convert"),
                fallback=list(row.get("fallback") or []),
            )
        )
    return out
