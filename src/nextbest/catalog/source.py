"""Read catalog YAML keeping where every value stands (file and line), for precise errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nextbest.errors import CatalogProblem

__all__ = ["SourceMap", "catalog_files", "read_sources"]

SECTIONS_LIST = ("topics", "segments", "offers", "campaigns", "placements")
SECTIONS_SINGLE = ("version", "contact_policy", "scoring", "profile", "holdout_share")


class SourceMap:
    """Maps a merged-catalog path such as ``$.offers[3].value`` to (file, line)."""

    def __init__(self) -> None:
        self._lines: dict[str, tuple[str, int]] = {}

    def add(self, path: str, file: str, line: int) -> None:
        self._lines.setdefault(path, (file, line))

    def where(self, path: str) -> tuple[str, int | None]:
        probe = path
        while probe:
            hit = self._lines.get(probe)
            if hit is not None:
                return hit
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                break
            probe = probe[:cut]
        first = next(iter(self._lines.values()), ("<catalog>", 0))
        return first[0], None

    def problem(self, path: str, reason: str) -> CatalogProblem:
        file, line = self.where(path)
        return CatalogProblem(file, line, path, reason)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reports an impossible date (2026-02-30) as a YAML error at its line."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date {node.value!r}: {exc}", node.start_mark
            ) from exc


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _walk(node: yaml.Node, path: str, file: str, out: dict[str, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + "." + str(key.value)] = key.start_mark.line + 1
            _walk(value, path + "." + str(key.value), file, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", file, out)


def _load_file(path: Path) -> tuple[Any, dict[str, int]]:
    text = path.read_text(encoding="utf-8")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "$", str(path), lines)
    return data, lines


def catalog_files(location: Path) -> list[Path]:
    if location.is_dir():
        return sorted(p for p in location.rglob("*") if p.suffix in (".yaml", ".yml"))
    return [location]


def read_sources(location: Path) -> tuple[dict[str, Any], SourceMap, list[CatalogProblem]]:
    """Merge every YAML file under ``location`` by section; list sections concatenate."""
    merged: dict[str, Any] = {}
    smap = SourceMap()
    problems: list[CatalogProblem] = []
    files = catalog_files(location)
    if not files or not all(p.exists() for p in files):
        return merged, smap, [CatalogProblem(str(location), None, "$", "no catalog YAML found")]
    for file in files:
        name = str(file)
        try:
            data, lines = _load_file(file)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problems.append(CatalogProblem(name, line, "$", f"YAML: {exc}".splitlines()[0]))
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(CatalogProblem(name, 1, "$", "a catalog file must be a mapping"))
            continue
        for key, value in data.items():
            key_line = lines.get(f"$.{key}", 1)
            if key in SECTIONS_LIST:
                if not isinstance(value, list):
                    problems.append(CatalogProblem(name, key_line, f"$.{key}", "must be a list"))
                    continue
                items = merged.setdefault(key, [])
                for i, item in enumerate(value):
                    target = f"$.{key}[{len(items)}]"
                    prefix = f"$.{key}[{i}]"
                    for p, ln in lines.items():
                        if p == prefix or p.startswith(prefix + ".") or p.startswith(prefix + "["):
                            smap.add(target + p[len(prefix) :], name, ln)
                    items.append(item)
            elif key in SECTIONS_SINGLE:
                if key in merged:
                    problems.append(CatalogProblem(name, key_line, f"$.{key}", "defined twice"))
                    continue
                merged[key] = value
                for p, ln in lines.items():
                    if p == f"$.{key}" or p.startswith(f"$.{key}.") or p.startswith(f"$.{key}["):
                        smap.add(p, name, ln)
            else:
                known = ", ".join(SECTIONS_LIST + SECTIONS_SINGLE)
                problems.append(
                    CatalogProblem(name, key_line, f"$.{key}", f"unknown section; use {known}")
                )
    return merged, smap, problems
