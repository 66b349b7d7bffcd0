"""The decision log as a Parquet file for analysts (pyarrow): one row per shown item, with
its rewards (``clicked``, ``converted``: see ``learn.logs``), and one row per control
exposure.

Rows, told apart by ``arm``:

- ``treatment``: an item the decision showed, at its ``position``, with its campaign's
  ``variant`` (null: the campaign has none), its score, propensity and rewards;
- ``control``: an offer the decision would have shown but for the customer's control arm in
  its campaign (``Decision.control``): ``position``, scores, propensity and rewards are null
  (it was not shown: control customers' KPIs are the experiment counters' to attribute);
- null: a decision that showed nothing and held nothing back, so coverage can be counted.

``value`` is what a conversion of the offer is worth, from the catalog given to the export
(``OfferSpec.value``; null without a catalog), so value-weighted outcomes need no join.
Nullable columns keep their types in pandas: the file carries pandas metadata that reads
``position`` as ``Int16`` and ``clicked`` / ``converted`` as ``boolean`` (pandas' nullable
dtypes), not as float and object. Lists (candidates, the urgent ones, the fallback content
that could fill empty slots, the candidates the exploration budget kept from exploring,
control exposures, segments) stay lists and the features a map,
so a notebook can re-score or evaluate a policy offline from the file alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from nextbest.decide.model import Decision, PropensityKind
from nextbest.errors import ValidationError
from nextbest.experiments.assignment import Arm
from nextbest.learn.logs import LoggedItem

__all__ = [
    "DECISION_SCHEMA",
    "ExportedOffer",
    "decision_rows",
    "read_logged_items",
    "rewards_of",
    "write_decisions",
]

#: (decision_id, offer_id) -> (clicked, converted)
Rewards = Mapping[tuple[str, str], tuple[bool, bool]]


def rewards_of(items: Iterable[LoggedItem]) -> Rewards:
    """The rewards of the logged rows (``learn.logs.join_rewards``), as ``write_decisions``
    takes them."""
    return {(i.decision_id, i.offer_id): (i.clicked, i.converted) for i in items}


class ExportedOffer(NamedTuple):
    """What the export adds about an offer from the catalog: its kind, campaign and value."""

    kind: str
    campaign_id: str | None
    value: float


#: offer id -> what the export says of it
Offers = Mapping[str, ExportedOffer]

#: how pandas reads the nullable columns (pyarrow's ``to_pandas`` honours this metadata)
_PANDAS_TYPES = {"position": ("int16", "Int16"), "clicked": ("bool", "boolean")}
_PANDAS_TYPES["converted"] = _PANDAS_TYPES["clicked"]
_PANDAS_METADATA = json.dumps(
    {
        "index_columns": [],
        "column_indexes": [],
        "columns": [
            {"name": n, "field_name": n, "pandas_type": pt, "numpy_type": nt, "metadata": None}
            for n, (pt, nt) in _PANDAS_TYPES.items()
        ],
        "creator": {"library": "nextbest", "version": "1"},
        "pandas_version": "2.0.0",
    }
).encode()

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
        ("arm", pa.string()),
        ("variant", pa.string()),
        ("value", pa.float64()),
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
        ("unexplorable", pa.list_(pa.string())),
        ("control", pa.list_(pa.string())),
        ("segments", pa.list_(pa.string())),
        ("features", pa.map_(pa.string(), pa.float64())),
    ],
    metadata={b"pandas": _PANDAS_METADATA},
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


def decision_rows(
    decision: Decision, rewards: Rewards | None = None, offers: Offers | None = None
) -> list[dict[str, Any]]:
    """The rows of one decision (see the module): its shown items, then its control
    exposures; one row with no offer if it has neither. ``offers`` adds the offers' value
    (and a control exposure's kind and campaign)."""
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
        "unexplorable": decision.unexplorable,
        "control": decision.control,
        "segments": decision.segments,
        "features": list(decision.features.items()),
    }
    if not decision.items and not decision.control:
        return [base]
    info = offers or {}
    rows = [
        {
            **base,
            "position": item.position,
            "offer_id": item.offer_id,
            "kind": item.kind,
            "campaign_id": item.campaign_id,
            "arm": item.arm.value,
            "variant": item.variant,
            "value": _value(info, item.offer_id),
            "score": item.score,
            "p_click": item.p_click,
            "p_convert": item.p_convert,
            "propensity": item.propensity,
            "propensity_kind": item.propensity_kind,
            **_rewarded(rewards, decision.decision_id, item.offer_id),
        }
        for item in decision.items
    ]
    for oid in decision.control:
        known = info.get(oid)
        rows.append(
            {
                **base,
                "offer_id": oid,
                "kind": known.kind if known else None,
                "campaign_id": known.campaign_id if known else None,
                "arm": Arm.CONTROL.value,
                "value": known.value if known else None,
            }
        )
    return rows


def _value(offers: Offers, offer_id: str) -> float | None:
    known = offers.get(offer_id)
    return known.value if known is not None else None


def _rewarded(rewards: Rewards | None, decision_id: str, offer_id: str) -> dict[str, Any]:
    if rewards is None:
        return {}
    clicked, converted = rewards.get((decision_id, offer_id), (False, False))
    return {"clicked": clicked, "converted": converted}


def write_decisions(
    decisions: Iterable[Decision],
    path: str | Path,
    rewards: Rewards | None = None,
    offers: Offers | None = None,
) -> int:
    """Stream ``decisions`` into a Parquet file at ``path``; the number of rows written."""
    try:
        return _write(decisions, path, rewards, offers)
    except (OSError, pa.ArrowException) as exc:
        raise ValidationError(f"cannot write {path}: {exc}", "$.out") from exc


def _write(
    decisions: Iterable[Decision], path: str | Path, rewards: Rewards | None, offers: Offers | None
) -> int:
    rows: list[dict[str, Any]] = []
    written = 0
    with pq.ParquetWriter(str(path), DECISION_SCHEMA, compression="zstd") as writer:
        for decision in decisions:
            rows.extend(decision_rows(decision, rewards, offers))
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
        if row.get("arm") == Arm.CONTROL.value:
            continue  # not shown: no action of the logging policy
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
                # files written before these columns: no urgent messages, no fallback,
                # nothing recorded as unexplorable
                urgent=list(row.get("urgent") or []),
                p_click=row.get("p_click"),
                p_convert=row.get("p_convert"),
                fallback=list(row.get("fallback") or []),
                unexplorable=list(row.get("unexplorable") or []),
            )
        )
    return out
