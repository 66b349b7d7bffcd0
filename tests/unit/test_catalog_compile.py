"""The pure catalog compiler: a parsed catalog in memory and a SourceMap give the same Catalog
as loading the YAML from disk, and every problem names its file, line and field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nextbest.catalog import Catalog, SourceMap, compile_catalog
from nextbest.errors import CatalogError, CatalogProblem
from nextbest.store.catalog_files import load_catalog
from tests.support import EXAMPLE_CATALOG

DIGEST = "0123456789abcdef" * 4


def example_raw() -> dict[str, Any]:
    """The example bank parsed and merged by section, as plain data (no adapter involved)."""
    raw: dict[str, Any] = {}
    for file in sorted(EXAMPLE_CATALOG.glob("*.yaml")):
        for key, value in yaml.safe_load(file.read_text(encoding="utf-8")).items():
            if isinstance(value, list):
                raw.setdefault(key, []).extend(value)
            else:
                raw[key] = value
    return raw


def shape(catalog: Catalog) -> dict[str, Any]:
    """Everything a decision, the learner and the fold read from a compiled catalog."""
    return {
        "spec": catalog.spec,
        "version": catalog.version,
        "digest": catalog.digest,
        "source": catalog.source,
        "fold_config": catalog.fold_config,
        "segments": [(s, r.source, r.roots, r.fields) for s, r in catalog.segments],
        "offers": {
            oid: (
                o.spec,
                o.rule.source,
                o.campaign,
                o.weight,
                o.base_ctr,
                o.valid_from,
                o.valid_until,
                o.segment_names,
            )
            for oid, o in catalog.offers.items()
        },
        "by_placement": {p: [o.id for o in offers] for p, offers in catalog.by_placement.items()},
        "placements": catalog.placements,
        "campaigns": catalog.campaigns,
        "commercial_offers": catalog.commercial_offers,
        "segment_names": catalog.segment_names,
        "rule_roots": catalog.rule_roots,
        "rule_topics": catalog.rule_topics,
        "named_offers": catalog.named_offers,
        "policy": catalog.policy,
        "scoring": catalog.scoring,
    }


def test_a_catalog_in_memory_compiles_to_the_catalog_loaded_from_disk() -> None:
    disk = load_catalog(EXAMPLE_CATALOG)
    memory = compile_catalog(
        example_raw(), SourceMap(), digest=disk.digest, source=str(EXAMPLE_CATALOG)
    )
    assert memory.version == disk.version
    assert memory.version == f"{disk.spec.version}+{disk.digest[:12]}"
    assert shape(memory) == shape(disk)


def test_the_version_ends_with_the_digest_passed_in() -> None:
    catalog = compile_catalog(example_raw(), SourceMap(), digest=DIGEST, source="<memory>")
    assert catalog.version == f"{catalog.spec.version}+{DIGEST[:12]}"
    assert catalog.digest == DIGEST
    assert catalog.source == "<memory>"


def test_compiling_does_not_change_the_raw_mapping() -> None:
    raw = example_raw()
    before = yaml.safe_dump(raw)
    compile_catalog(raw, SourceMap(), digest=DIGEST, source="<memory>")
    assert yaml.safe_dump(raw) == before


def small_raw(**offer: Any) -> dict[str, Any]:
    return {
        "topics": [{"id": "mortgage", "name": "Mortgage"}],
        "offers": [
            {
                "id": "advice",
                "name": "Mortgage advice",
                "kind": "commercial",
                "topic": "mortgage",
                "content": {"web": {"title": "Talk to us"}},
                **offer,
            }
        ],
        "placements": [{"id": "hero", "channel": "web"}],
    }


def problems_of(raw: dict[str, Any], smap: SourceMap) -> list[CatalogProblem]:
    with pytest.raises(CatalogError) as caught:
        compile_catalog(raw, smap, digest=DIGEST, source="<memory>")
    return caught.value.problems


def test_small_raw_compiles() -> None:
    catalog = compile_catalog(small_raw(), SourceMap(), digest=DIGEST, source="<memory>")
    assert [o.id for o in catalog.by_placement["hero"]] == ["advice"]


def test_a_bad_value_names_its_file_line_and_field_path() -> None:
    smap = SourceMap()
    smap.add("$.offers", "offers.yaml", 1)
    smap.add("$.offers[0]", "offers.yaml", 2)
    smap.add("$.offers[0].value", "offers.yaml", 7)
    (problem,) = problems_of(small_raw(value="lots"), smap)
    assert (problem.file, problem.line, problem.path) == ("offers.yaml", 7, "$.offers[0].value")
    assert problem.reason == "Expected `float`, got `str`"


def test_without_lines_a_problem_still_names_its_field_path() -> None:
    (problem,) = problems_of(small_raw(topic="cars"), SourceMap())
    assert (problem.file, problem.line) == ("<catalog>", None)
    assert problem.path == "$.offers[0].topic"
    assert problem.reason == "unknown topic 'cars'"


def test_a_rule_naming_an_unknown_segment_is_a_problem_at_its_field() -> None:
    (problem,) = problems_of(small_raw(eligibility="segments.nobody"), SourceMap())
    assert problem.path == "$.offers[0].eligibility"
    assert problem.reason == "segments.nobody is not defined in the catalog"


def test_every_problem_is_reported_at_once() -> None:
    raw = small_raw(topic="cars", valid_from="2026-02-30")
    raw["holdout_share"] = 0.9
    assert [p.path for p in problems_of(raw, SourceMap())] == [
        "$.holdout_share",
        "$.offers[0].topic",
    ]
    raw = small_raw(valid_from="someday")
    assert [(p.path, p.reason) for p in problems_of(raw, SourceMap())] == [
        ("$.offers[0].valid_from", "not an ISO date or date-time: 'someday'")
    ]


def test_sections_the_compiler_cannot_read_are_problems() -> None:
    raw: dict[str, Any] = {**small_raw(), "segments": {"id": "adult"}, "offerz": []}
    listed, unknown = problems_of(raw, SourceMap())
    assert (listed.path, listed.reason) == ("$.segments", "must be a list")
    assert unknown.path == "$.offerz"
    assert unknown.reason.startswith("unknown section; use topics, segments, ")


def test_a_placement_problem_names_its_own_index_after_a_broken_placement() -> None:
    raw = small_raw()
    raw["placements"] = [
        {"id": "broken", "channel": "fax"},
        {"id": "empty", "channel": "web", "kinds": []},
    ]
    assert [p.path for p in problems_of(raw, SourceMap())] == [
        "$.placements[0].channel",
        "$.placements[1].kinds",
    ]
