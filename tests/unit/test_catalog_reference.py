"""The catalog reference (docs/catalog.md) stays complete and true: every field of every
spec of the catalog's model has a row in its spec's table, no row names a field that is not
there, scalar defaults are the code's, and every variable and function rules may use is
listed."""

from __future__ import annotations

import datetime
import re
import typing
from typing import Any

import msgspec
import pytest
import yaml

from nextbest.catalog import model
from nextbest.catalog.compile import _KPI_SCHEMA
from nextbest.rules.reads import INTEREST_FIELDS, OFFER_FIELDS, PROFILE_FIELDS, SECURITY_FIELDS
from nextbest.rules.schema import NOW_FIELDS, rule_schema
from nextbest.rules.typecheck import FUNCTIONS, METHODS, check_rule
from nextbest.store.catalog_files import load_catalog
from tests.support import EXAMPLE_CATALOG, ROOT

DOC = (ROOT / "docs" / "catalog.md").read_text()
#: every spec a catalog file is made of
SPECS: list[type[msgspec.Struct]] = [
    model.TopicSpec,
    model.SegmentSpec,
    model.OfferSpec,
    model.Content,
    model.CampaignSpec,
    model.Hypothesis,
    model.KpiSpec,
    model.GuardrailSpec,
    model.VariantSpec,
    model.PlacementSpec,
    model.LearningSpec,
    model.Greedy,
    model.EpsilonGreedy,
    model.Softmax,
    model.Thompson,
    model.ContactPolicy,
    model.ImpressionCap,
    model.ScoringSpec,
    model.ProfileSettings,
    model.FeedbackTrust,
    model.AdvisorSpec,
    model.Expertise,
    model.WorkingHours,
    model.CallbackPolicy,
    model.SecuritySpec,
    model.SensitiveSpec,
    model.ConsentSpec,
    model.CatalogSpec,
]


def _table(marker: str) -> list[list[str]]:
    """The rows (cells, stripped) of the table after ``<!-- marker -->``."""
    start = DOC.index(f"<!-- {marker} -->")
    rows: list[list[str]] = []
    for line in DOC[start:].splitlines()[1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells[0] in ("field", "variable") or set(cells[0]) <= {"-", " "}:
            continue
        rows.append(cells)
    return rows


def _name(cell: str) -> str:
    assert cell.startswith("`"), cell
    assert cell.endswith("`"), cell
    return cell.strip("`")


def test_every_spec_of_the_model_is_in_the_reference() -> None:
    """A new Struct in catalog/model.py joins SPECS (and so the reference)."""
    structs = {
        v
        for v in vars(model).values()
        if isinstance(v, type)
        and issubclass(v, msgspec.Struct)
        and v.__module__
        in (
            model.__name__,
            "nextbest.profile.topics",
            "nextbest.profile.consent",
        )
    }
    assert structs == set(SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_every_field_has_a_row_and_every_row_a_field(spec: type[msgspec.Struct]) -> None:
    rows = {_name(cells[0]): cells for cells in _table(f"spec: {spec.__name__}")}
    fields = set(spec.__struct_fields__)
    tag = spec.__struct_config__.tag
    if tag is not None:
        fields.add("type")  # a tagged union's member is chosen by ``type:``
        assert rows["type"][1] == f"`{tag}`"
    assert set(rows) == fields
    for cells in rows.values():
        assert len(cells) == 5, cells
        assert all(cells[:4]), cells  # name, type, default, meaning


def _default_text(value: Any) -> str | None:
    """How the reference writes a scalar default, or None for one it describes in words."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:g}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return None


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_defaults_are_the_code_s(spec: type[msgspec.Struct]) -> None:
    rows = {_name(cells[0]): cells for cells in _table(f"spec: {spec.__name__}")}
    info = msgspec.inspect.type_info(spec)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        default = rows[field.name][2]
        if field.required:
            assert default == "required", field.name
            continue
        assert default != "required", field.name
        value = field.default
        if value is msgspec.NODEFAULT:
            continue  # a factory: described in words
        expected = _default_text(value)
        if expected is not None:
            assert default == expected, (spec.__name__, field.name)


#: the fields whose text is a rule
_RULES = {"rule", "eligibility", "urgent"}
#: the fields whose text is a KPI's condition on its event
_KPI_RULES = {"where"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_every_example_is_a_valid_value(spec: type[msgspec.Struct]) -> None:
    """Each example, read as YAML, converts to its field's type; a rule example type checks
    against the example bank."""
    hints = typing.get_type_hints(spec, include_extras=True)
    schema = _example_schema()
    for cells in _table(f"spec: {spec.__name__}"):
        name, example = _name(cells[0]), cells[4]
        if not example:
            continue
        value = _plain(yaml.safe_load(example.strip("`")))
        if name == "type":
            msgspec.convert(value, spec, strict=False)
            continue
        msgspec.convert(value, hints[name], strict=False)
        if name in _RULES:
            assert check_rule(value, schema) == [], (name, value)
        if name in _KPI_RULES:
            assert check_rule(value, _KPI_SCHEMA) == [], (name, value)


def _example_schema() -> Any:
    bank = load_catalog(EXAMPLE_CATALOG)
    return rule_schema(bank.topics, bank.segment_names, bank.offers)


def _plain(value: Any) -> Any:
    """A YAML date as the catalog reads it: its ISO text."""
    return value.isoformat() if isinstance(value, datetime.date) else value


def test_every_rule_variable_is_listed() -> None:
    listed = {_name(cells[0]) for cells in _table("variables")}
    expected = {f"profile.{f}" for f in PROFILE_FIELDS}
    expected |= {f"interest.<topic>.{f}" for f in INTEREST_FIELDS}
    expected |= {f"offers.<offer>.{f}" for f in OFFER_FIELDS}
    expected |= {f"now.{f}" for f in NOW_FIELDS}
    expected |= {f"security.{f}" for f in SECURITY_FIELDS}
    expected |= {"products", "traits", "context", "segments.<segment>"}
    assert listed == expected


def test_every_function_rules_may_call_is_listed() -> None:
    section = DOC[DOC.index("Functions:") : DOC.index("### Variables")]
    for name in [*FUNCTIONS, *METHODS]:
        assert f"`{name}" in section or f"{name}`" in section, name


def test_the_reference_is_linked_from_the_readme() -> None:
    assert "(docs/catalog.md)" in (ROOT / "README.md").read_text()
