"""The catalog as YAML files in git: read them keeping where every value stands (file and
line), hash them for the catalog's version, and hand them to the pure compiler.

``load_catalog`` is how the engine, the CLI and the benchmarks get a ``Catalog``;
``check_catalog`` lists every problem instead of raising. YAML that does not parse is reported
at its line and column with what the parser expected and a plain-language hint; a key given
twice in one mapping (YAML would keep the last silently) is an error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from nextbest.catalog.compile import SECTIONS_LIST, compile_catalog, section_problem
from nextbest.catalog.compiled import Catalog
from nextbest.catalog.source_map import SourceMap
from nextbest.errors import CatalogError, CatalogProblem

__all__ = ["catalog_digest", "catalog_files", "check_catalog", "load_catalog", "read_sources"]


def load_catalog(location: str | Path, now: float | None = None) -> Catalog:
    """Load and compile; raise CatalogError listing every problem found. ``now``: when it
    is checked (schedules that ended by then are warnings on ``Catalog.warnings``)."""
    path = Path(location)
    raw, smap, problems = read_sources(path)
    if problems:
        raise CatalogError(problems)
    return compile_catalog(raw, smap, digest=catalog_digest(path), source=str(path), now=now)


def check_catalog(location: str | Path, now: float | None = None) -> list[CatalogProblem]:
    """Every problem in the catalog at ``location`` (a file or a folder of YAML files),
    errors and warnings."""
    try:
        return load_catalog(location, now).warnings
    except CatalogError as exc:
        return exc.problems


def catalog_digest(location: Path) -> str:
    """SHA-256 over every catalog file's name and bytes, in file order."""
    h = hashlib.sha256()
    for file in catalog_files(location):
        if file.exists():
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()


class _Loader(yaml.SafeLoader):
    """SafeLoader that reports an impossible date (2026-02-30) as a YAML error at its line."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date {node.value!r}: {exc}", node.start_mark
            ) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping; a key given twice is an error at the second (YAML keeps the last)."""
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found duplicate key {key!r} (first at line {first[key]}): YAML would "
                    "keep only the last value",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)

#: PyYAML's token names (quoted or, for the <...> ones, not), as a marketer reads them
_TOKENS = {
    "<stream end>": "the end of the file",
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a more indented key",
    "<block sequence start>": "a more indented list",
    "?": "a key at another indentation",
    "-": "a list item at another indentation",
}
#: (what PyYAML says, what usually causes it)
_HINTS = (
    ("found character '\\t'", "YAML indents with spaces, never tabs"),
    ("alias", 'a value starting with * is read as an alias: quote it ("*green*")'),
    (
        "mapping values are not allowed",
        "a value holding ': ' must be quoted, or the line is indented wrongly",
    ),
    ("but found ']'", "a ] that closes no [ list"),
    ("but found '}'", "a } that closes no { mapping"),
    ("expected <block end>", "a line is indented differently from the lines of its block"),
    ("expected ',' or ']'", "a [ list is not closed with ]"),
    ("expected ',' or '}'", "a { mapping is not closed with }"),
    ("could not find expected ':'", "a key needs a colon after it (key: value)"),
    ("unexpected end of stream", "a quote is not closed"),
    ("while scanning a quoted scalar", "a quote is not closed"),
    ("cannot start any token", "a value starting with this character must be quoted"),
)


def _yaml_problem(name: str, exc: yaml.YAMLError) -> CatalogProblem:
    """A YAML error at its line and column: what the parser expected, and the likely cause."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    text = str(problem)
    for token, words in _TOKENS.items():
        text = text.replace(f"'{token}'", words)
        if token.startswith("<"):
            text = text.replace(token, words)
    if context:
        text += f" ({context}"
        if context_mark is not None:
            text += f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
        text += ")"
    said = f"{problem} {context or ''}"
    hint = next((h for pattern, h in _HINTS if pattern in said), None)
    if hint is not None:
        text += f": {hint}"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return CatalogProblem(name, line, "$", f"YAML: {text}", column=column)


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
    """The YAML files of a catalog folder in a fixed order, or the one file given."""
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
            problems.append(_yaml_problem(name, exc))
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(CatalogProblem(name, 1, "$", "a catalog file must be a mapping"))
            continue
        for key, value in data.items():
            key_line = lines.get(f"$.{key}", 1)
            reason = section_problem(key, value)
            if reason is not None:
                problems.append(CatalogProblem(name, key_line, f"$.{key}", reason))
                continue
            if key in SECTIONS_LIST:
                items = merged.setdefault(key, [])
                for i, item in enumerate(value):
                    target = f"$.{key}[{len(items)}]"
                    prefix = f"$.{key}[{i}]"
                    for p, ln in lines.items():
                        if p == prefix or p.startswith(prefix + ".") or p.startswith(prefix + "["):
                            smap.add(target + p[len(prefix) :], name, ln)
                    items.append(item)
            elif key in merged:
                problems.append(CatalogProblem(name, key_line, f"$.{key}", "defined twice"))
            else:
                merged[key] = value
                for p, ln in lines.items():
                    if p == f"$.{key}" or p.startswith(f"$.{key}.") or p.startswith(f"$.{key}["):
                        smap.add(p, name, ln)
    return merged, smap, problems
