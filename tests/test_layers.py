"""Dependencies point inward: the core imports no adapter, composition root or face."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

import nextbest

PKG = Path(nextbest.__file__).parent
CORE = [
    "audit",
    "events",
    "profile",
    "rules",
    "catalog",
    "decide",
    "experiments",
    "learn",
    "guard",
    "advisors",
    "transparency",
]
CORE_MODULES = ["errors", "types", "clock"]
#: adapters move bytes (DESIGN.md, "Layers"); the ones not written yet are checked once they are
ADAPTERS = ["store", "bus", "channels"]
#: faces and the simulator: outer folders with no rule here beyond importing inward
OUTER_FOLDERS = ["api", "console", "sim"]
OUTER = [
    "nextbest.store",
    "nextbest.engine",
    "nextbest.callbacks",
    "nextbest.callback_sweeper",
    "nextbest.bootstrap",
    "nextbest.usecases",
    "nextbest.auditing",
    "nextbest.grouped_audit",
    "nextbest.migrate",
    "nextbest.decision_journal",
    "nextbest.ingestion",
    "nextbest.api_worker",
    "nextbest.fold_worker",
    "nextbest.scaled_erasure",
    "nextbest.live_profiles",
    "nextbest.service",
    "nextbest.api",
    "nextbest.cli",
    "nextbest.sim",
    "nextbest.settings",
    "nextbest.bus",
    "nextbest.channels",
    "nextbest.console",
]
COMPOSITION_AND_FACES = (
    "nextbest.api",
    "nextbest.cli",
    "nextbest.console",
    "nextbest.engine",
    "nextbest.callbacks",
    "nextbest.callback_sweeper",
    "nextbest.bootstrap",
    "nextbest.usecases",
    "nextbest.auditing",
    "nextbest.grouped_audit",
    "nextbest.migrate",
    "nextbest.decision_journal",
    "nextbest.ingestion",
    "nextbest.api_worker",
    "nextbest.fold_worker",
    "nextbest.scaled_erasure",
    "nextbest.live_profiles",
    "nextbest.service",
)
#: modules that read or write files, sockets, processes or databases, or parse file formats
IO_MODULES = {
    "pathlib",
    "os",
    "io",
    "shutil",
    "tempfile",
    "glob",
    "fileinput",
    "importlib.resources",
    "yaml",
    "msgspec.yaml",
    "msgspec.toml",
    "tomllib",
    "subprocess",
    "sqlite3",
    "socket",
    "ssl",
    "select",
    "selectors",
    "http",
    "urllib.request",
    "requests",
    "httpx",
    "uvicorn",
    "starlette",
    "psycopg",
    "redis",
    "nats",
    "asyncio",
}
#: builtins that do I/O when called
IO_CALLS = {"open", "input"}


def _is(name: str, modules: Iterable[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def imports(path: Path) -> set[str]:
    return imports_of(path.read_text())


def imports_of(source: str) -> set[str]:
    """Every module ``source`` imports; ``from a import b`` counts as ``a`` and ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def io_uses(source: str) -> set[str]:
    """The I/O a module's source reaches for: I/O modules it imports, I/O builtins it calls."""
    used = {name for name in imports_of(source) if _is(name, IO_MODULES)}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in IO_CALLS
        ):
            used.add(f"{node.func.id}()")
    return used


def core_files() -> list[Path]:
    files = [PKG / f"{m}.py" for m in CORE_MODULES]
    for pkg in CORE:
        files.extend((PKG / pkg).rglob("*.py"))
    return files


def adapter_files() -> list[Path]:
    return [f for pkg in ADAPTERS if (PKG / pkg).is_dir() for f in (PKG / pkg).rglob("*.py")]


def test_core_imports_no_adapter_or_face():
    for path in core_files():
        for name in imports(path):
            assert not _is(name, OUTER), (path, name)


def test_core_does_no_io():
    for path in core_files():
        assert io_uses(path.read_text()) == set(), path


@pytest.mark.parametrize(
    ("planted", "found"),
    [
        ("from pathlib import Path", {"pathlib", "pathlib.Path"}),
        ("import os.path", {"os.path"}),
        ("from os import environ", {"os", "os.environ"}),
        ("import yaml", {"yaml"}),
        ("from importlib import resources", {"importlib.resources"}),
        ("import subprocess as sp", {"subprocess"}),
        ("import sqlite3", {"sqlite3"}),
        ("import httpx", {"httpx"}),
        ("from http.client import HTTPConnection", {"http.client", "http.client.HTTPConnection"}),
        ("def f(p):\n    with open(p) as fh:\n        return fh.read()", {"open()"}),
    ],
)
def test_the_io_check_catches_a_planted_violation(planted: str, found: set[str]) -> None:
    clean = "import math\nfrom collections.abc import Mapping\n"
    assert io_uses(clean) == set()
    assert io_uses(clean + planted) == found


def test_every_folder_has_a_layer():
    """A new folder is placed in a layer here, or none of these checks would cover it."""
    folders = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert folders <= set(CORE + ADAPTERS + OUTER_FOLDERS), folders - set(CORE + ADAPTERS)


def test_adapters_import_no_face():
    assert adapter_files(), "no adapter folder found"
    for path in adapter_files():
        for name in imports(path):
            assert not _is(name, COMPOSITION_AND_FACES), (path, name)


def test_every_module_pins_all():
    for path in PKG.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        names = {
            t.id
            for n in tree.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        assert "__all__" in names, path


def test_only_the_composition_root_chooses_a_backend():
    """Backends are chosen in bootstrap alone: nothing else in the package names one."""
    backends = (
        "nextbest.store.sqlite",
        "nextbest.store.memory",
        "nextbest.store.postgres",
        "nextbest.store.outbox_sqlite",
        "nextbest.store.outbox_memory",
        "nextbest.store.outbox_postgres",
    )
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if rel == ("bootstrap.py",) or rel[0] == "store":
            continue
        found = {n for n in imports(path) if n in backends}
        assert not found, (path, found)
        assert "sqlite_stores" not in path.read_text(), path
        assert "memory_stores" not in path.read_text(), path
        assert "postgres_stores" not in path.read_text(), path


def test_nothing_but_the_cli_imports_the_simulator():
    """The engine never reads the synthetic bank's hidden needs or response model."""
    for path in PKG.rglob("*.py"):
        if "sim" in path.relative_to(PKG).parts or path.name == "cli.py":
            continue
        assert not any(n.startswith("nextbest.sim") for n in imports(path)), path
