"""The shipped role script is exactly what `splitter grants` prints for topology.py, so the two cannot drift.

Regenerate it with:
  splitter grants --role splitter --source-dsn postgresql:///bento_social > deploy/postgres/splitter-role.sql
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from splitter.cli.app import build_parser
from splitter.cli.commands import grants

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "postgres" / "splitter-role.sql"


def test_shipped_script_is_what_splitter_grants_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPLITTER_SLOT", "SPLITTER_PUBLICATION", "SPLITTER_TOPIC", "SPLITTER_TOPOLOGY"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["grants", "--role", "splitter", "--topology", str(ROOT / "topology.py"),
                                      "--source-dsn", "postgresql:///bento_social"])
    out = io.StringIO()
    assert grants.run(args, out) == 0
    assert out.getvalue() == SCRIPT.read_text(), "regenerate deploy/postgres/splitter-role.sql (see above)"


def test_the_script_grants_no_blanket_privileges_and_owns_only_its_schema() -> None:
    statements = [line for line in SCRIPT.read_text().splitlines() if not line.startswith("--")]
    text = "\n".join(statements).upper()
    for broad in ("ALL TABLES", "ALL SEQUENCES", "ALL PRIVILEGES", "PG_READ_ALL_DATA", "PG_WRITE_ALL_DATA",
                  " SUPERUSER", "CREATEDB ", "BYPASSRLS "):
        assert broad not in text.replace("NOSUPERUSER", "").replace("NOCREATEDB", "").replace("NOBYPASSRLS", ""), broad
    owned = [line for line in statements if "OWNER TO" in line]
    assert owned and all('ALTER SCHEMA "splitter" OWNER TO "splitter"' in line for line in owned)
