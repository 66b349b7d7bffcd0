"""Dependencies point inward: the core imports no adapter, composition root or face."""

from __future__ import annotations

import ast
from pathlib import Path

import nextbest

PKG = Path(nextbest.__file__).parent
CORE = ["events", "profile", "rules", "catalog", "decide", "experiments", "learn", "guard"]
CORE_MODULES = ["errors", "types", "clock"]
OUTER = [
    "nextbest.store",
    "nextbest.engine",
    "nextbest.bootstrap",
    "nextbest.usecases",
    "nextbest.decision_journal",
    "nextbest.api",
    "nextbest.cli",
    "nextbest.sim",
    "nextbest.settings",
    "nextbest.bus",
    "nextbest.channels",
    "nextbest.console",
]
IO_MODULES = {
    "sqlite3",
    "socket",
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


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def core_files() -> list[Path]:
    files = [PKG / f"{m}.py" for m in CORE_MODULES]
    for pkg in CORE:
        files.extend((PKG / pkg).rglob("*.py"))
    return files


def test_core_imports_no_adapter_or_face():
    for path in core_files():
        for name in imports(path):
            assert not any(name == o or name.startswith(o + ".") for o in OUTER), (path, name)
            assert name.split(".")[0] not in IO_MODULES or name == "time", (path, name)


def test_adapters_import_no_face():
    for path in (PKG / "store").rglob("*.py"):
        for name in imports(path):
            assert not name.startswith(("nextbest.api", "nextbest.cli", "nextbest.engine")), (
                path,
                name,
            )


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
    backends = ("nextbest.store.sqlite", "nextbest.store.memory")
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if rel == ("bootstrap.py",) or rel[0] == "store":
            continue
        found = {n for n in imports(path) if n in backends}
        assert not found, (path, found)
        assert "sqlite_stores" not in path.read_text(), path
        assert "memory_stores" not in path.read_text(), path


def test_nothing_but_the_cli_imports_the_simulator():
    """The engine never reads the synthetic bank's hidden needs or response model."""
    for path in PKG.rglob("*.py"):
        if "sim" in path.relative_to(PKG).parts or path.name == "cli.py":
            continue
        assert not any(n.startswith("nextbest.sim") for n in imports(path)), path
