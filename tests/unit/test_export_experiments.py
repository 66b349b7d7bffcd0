"""The decision export for the analyst (issue #18, item 8): ``arm``, ``variant``, ``value``,
a row per control exposure, and nullable columns that stay int and bool in pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.export import DECISION_SCHEMA, read_logged_items
from nextbest.usecases import export_decisions
from tests.support import EXAMPLE_CATALOG, T0, batch, counter_ids, identify, page, user_in

MORTGAGE = "https://bank.example/mortgages/rates"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    """A customer in mortgage_q4's control group and one in its treatment, both mortgage
    researchers, decided for in home_feed; and an unknown device that is shown nothing
    commercial."""
    folder = tmp_path_factory.mktemp("export")
    data = folder / "log.sqlite"
    engine = Engine(
        load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0), new_id=counter_ids()
    )
    held = user_in("control", "mortgage_q4", 0.1, prefix="held")
    shown = user_in("treatment", "mortgage_q4", 0.1, prefix="shown")
    for user in (held, shown):
        engine.ingest_batch(
            batch(
                identify({"age": 40}, user=user, at=T0 - 3600),
                *[page(MORTGAGE, user=user, at=T0 - 60 * k) for k in range(6)],
            )
        )
        engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    engine.close()
    out = folder / "decisions.parquet"
    export_decisions(str(EXAMPLE_CATALOG), str(data), out, None, None)
    return out, pq.read_table(out).to_pylist()


def test_a_control_customer_s_exposure_is_a_row(
    exported: tuple[Path, list[dict[str, object]]],
) -> None:
    _, rows = exported
    control = [r for r in rows if r["arm"] == "control"]
    assert control, "the held-out researcher would have been shown mortgage_advice"
    row = next(r for r in control if r["offer_id"] == "mortgage_advice")
    assert row["campaign_id"] == "mortgage_q4"
    assert row["value"] == 400.0
    assert row["kind"] == "commercial"
    assert row["position"] is None  # not shown
    assert row["clicked"] is None
    assert row["propensity"] is None
    assert "mortgage_advice" in row["control"]  # type: ignore[operator]


def test_shown_items_carry_arm_variant_and_value(
    exported: tuple[Path, list[dict[str, object]]],
) -> None:
    _, rows = exported
    catalog = load_catalog(EXAMPLE_CATALOG)
    treated = [r for r in rows if r["arm"] == "treatment"]
    assert any(r["offer_id"] == "mortgage_advice" for r in treated)
    for r in treated:
        assert r["value"] == catalog.offers[str(r["offer_id"])].spec.value
        assert r["variant"] is None  # the example bank's campaigns have no variants
        assert isinstance(r["position"], int)
        assert r["clicked"] is False


def test_offline_evaluation_reads_only_shown_items(
    exported: tuple[Path, list[dict[str, object]]],
) -> None:
    out, rows = exported
    items = read_logged_items(out)
    assert len(items) == sum(r["arm"] == "treatment" for r in rows)


def test_pandas_reads_position_as_int_and_clicked_as_bool_even_with_nulls(
    exported: tuple[Path, list[dict[str, object]]],
) -> None:
    out, _ = exported
    meta = json.loads(DECISION_SCHEMA.metadata[b"pandas"])
    types = {c["name"]: c["numpy_type"] for c in meta["columns"]}
    assert types == {"position": "Int16", "clicked": "boolean", "converted": "boolean"}
    assert pq.read_schema(out).metadata[b"pandas"] == DECISION_SCHEMA.metadata[b"pandas"]
    import pandas as pd  # a dev dependency: the analyst's path

    frame = pd.read_parquet(out)
    assert str(frame["position"].dtype) == "Int16"
    assert str(frame["clicked"].dtype) == "boolean"
    assert frame["position"].isna().any()  # the control rows


NOTEBOOK = EXAMPLE_CATALOG.parent / "notebooks" / "decisions.ipynb"


def test_the_example_notebook_runs_on_an_export(
    exported: tuple[Path, list[dict[str, object]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The notebook is valid nbformat 4 JSON, reads only columns the export has, and its
    code cells run in order on a real export, drawing its figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)  # no output kept
    out, _ = exported
    monkeypatch.setenv("NEXTBEST_DECISIONS", str(out))
    monkeypatch.setenv("NEXTBEST_CATALOG", str(EXAMPLE_CATALOG))
    plt.close("all")
    namespace: dict[str, object] = {}
    for k, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{k}]", "exec"), namespace)
    assert set(namespace["COLUMNS"]) <= set(DECISION_SCHEMA.names)  # type: ignore[arg-type]
    printed = capsys.readouterr().out
    assert f"{'mortgage_q4':<24} control      1  treatment      1  SRM p = " in printed
    assert len(plt.get_fignums()) == 3
    plt.close("all")
