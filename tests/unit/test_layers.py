"""The layering rules that import-linter cannot see, checked on the source text.

import-linter (`lint-imports`, contracts in pyproject.toml) sees every psycopg import as `psycopg`, so the
contract that keeps the driver in connectors/ lists the modules allowed to import it for SQL composition
(`psycopg.sql`) or DSN parsing (`psycopg.conninfo`); this test checks that those modules take only that.
It also holds every production module to a docstring and the size a reader can take in.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("splitter", "connectors", "devtools")
# psycopg's pure helpers a module above connectors/ may use: composing SQL text, parsing a DSN.
PURE_PSYCOPG = {"psycopg.sql", "psycopg.conninfo"}
MAX_LINES = 420


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, with `from X import y` counted as X.y (y may be a submodule)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _allowed_psycopg_users() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    driver = next(c for c in contracts if c["type"] == "forbidden" and "psycopg" in c["forbidden_modules"])
    return {rule.split("->")[0].strip() for rule in driver.get("ignore_imports", [])}


def test_the_listed_modules_take_only_psycopgs_pure_helpers() -> None:
    allowed = _allowed_psycopg_users()
    assert allowed, "the driver contract lists no exceptions: remove this test's premise or the contract changed"
    for name in sorted(allowed):
        path = ROOT / Path(*name.split(".")).with_suffix(".py")
        taken = {i for i in _imports(path) if i == "psycopg" or i.startswith("psycopg.")}
        assert taken, f"{name} is listed as a psycopg.sql user but imports no psycopg: drop it from pyproject"
        assert taken <= PURE_PSYCOPG, f"{name} imports {sorted(taken - PURE_PSYCOPG)} (only {sorted(PURE_PSYCOPG)})"


def test_no_module_above_connectors_imports_a_driver() -> None:
    allowed = _allowed_psycopg_users()
    offenders = []
    for path in _modules("splitter"):
        for imported in _imports(path):
            driver = imported.split(".")[0] in ("psycopg", "confluent_kafka")
            if driver and not (_module_name(path) in allowed and imported in PURE_PSYCOPG):
                offenders.append(f"{_module_name(path)} imports {imported}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("path", _modules(*PRODUCTION), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_what_it_owns_and_stays_readable(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (split it by job; limit {MAX_LINES})"
    if path.name != "__init__.py" or text.strip():
        assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(ROOT)} has no module docstring"
