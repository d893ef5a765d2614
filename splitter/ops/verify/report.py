"""The verify report: what differs in each table, as JSON and for people.

Owns: `TableReport` (per table: rows on each side, missing / extra / different with a sample of keys
and the columns that differ), `VerifyReport` (the tables, the consistent point, the held positions)
and their JSON and human forms.  Must not: compare anything or do I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from splitter.core.lsn import lsn_to_str

Key = dict[str, str | None]


@dataclass(frozen=True)
class RowDifference:
    """A key present on both sides whose other columns differ."""

    key: Key
    columns: tuple[str, ...]
    source: dict[str, str | None]
    target: dict[str, str | None]


@dataclass
class TableReport:
    service: str
    table: str  # schema.table in the service database
    source: str  # schema.table in the source
    key: tuple[str, ...]
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    missing: int = 0  # in the source, not in the target
    extra: int = 0  # in the target, not in the source
    different: int = 0  # same key, other columns differ
    missing_keys: list[Key] = field(default_factory=list)
    extra_keys: list[Key] = field(default_factory=list)
    different_rows: list[RowDifference] = field(default_factory=list)
    column_differences: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.different == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "table": self.table, "source": self.source, "key": list(self.key),
            "ok": self.ok, "source_rows": self.source_rows, "target_rows": self.target_rows,
            "missing": self.missing, "extra": self.extra, "different": self.different,
            "missing_keys": self.missing_keys, "extra_keys": self.extra_keys,
            "different_rows": [
                {"key": d.key, "columns": list(d.columns), "source": d.source, "target": d.target}
                for d in self.different_rows
            ],
            "column_differences": self.column_differences,
            "chunks": self.chunks, "chunks_differing": self.chunks_differing, "seconds": round(self.seconds, 3),
        }


@dataclass
class VerifyReport:
    tables: list[TableReport]
    consistent: bool
    source_lsn: int | None = None  # P: the source snapshot holds every transaction committed before it
    held_lsns: dict[str, int] = field(default_factory=dict)  # per service: the checkpoint it was compared at
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "consistent": self.consistent,
            "source_lsn": lsn_to_str(self.source_lsn) if self.source_lsn is not None else None,
            "held_lsns": {s: lsn_to_str(v) for s, v in self.held_lsns.items()},
            "seconds": round(self.seconds, 3),
            "tables": [t.to_dict() for t in self.tables],
        }

    def to_json(self) -> str:
        """`splitter verify --json`: the report, named as every command's JSON object is."""
        return json.dumps({"command": "verify", **self.to_dict()}, indent=2, default=str)

    def render(self) -> str:
        """The summary for people: one line a table, then what differs, with sample keys."""
        if self.consistent and self.source_lsn is not None:
            head = (f"verified at source LSN {lsn_to_str(self.source_lsn)} (one snapshot of the source; each worker "
                    f"held at it while its database's snapshot was taken)")
        else:
            head = "verified as is (no common snapshot: meaningful only with an idle source and caught-up workers)"
        header = ("SERVICE", "TABLE", "SOURCE ROWS", "TARGET ROWS", "MISSING", "EXTRA", "DIFFERENT", "RESULT")
        rows = [header] + [
            (t.service, t.table, f"{t.source_rows:,}", f"{t.target_rows:,}", f"{t.missing:,}", f"{t.extra:,}",
             f"{t.different:,}", "ok" if t.ok else "DIFFERS")
            for t in self.tables
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [head, ""]
        lines += ["  ".join(c.ljust(w) if i < 2 or i == 7 else c.rjust(w) for i, (c, w) in
                            enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
        for t in self.tables:
            if t.ok:
                continue
            lines.append("")
            lines.append(f"{t.service} {t.table} (from {t.source}):")
            if t.missing:
                lines.append(f"  missing in the target ({t.missing:,}): {_keys_text(t.missing_keys, t.missing)}")
            if t.extra:
                lines.append(f"  extra in the target ({t.extra:,}): {_keys_text(t.extra_keys, t.extra)}")
            if t.different:
                by_column = ", ".join(f"{c} ({n:,})" for c, n in sorted(t.column_differences.items()))
                lines.append(f"  different ({t.different:,}), by column: {by_column}")
                for d in t.different_rows:
                    cols = "; ".join(f"{c}: source {_short(d.source[c])} target {_short(d.target[c])}"
                                     for c in d.columns)
                    lines.append(f"    {_key_text(d.key)}: {cols}")
        bad = sum(1 for t in self.tables if not t.ok)
        lines.append("")
        lines.append(f"{len(self.tables)} table(s) compared in {self.seconds:.1f}s: "
                     + ("all match." if bad == 0 else f"{bad} differ."))
        return "\n".join(lines)


def _key_text(key: Key) -> str:
    return ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in key.items())


def _keys_text(keys: Sequence[Key], total: int) -> str:
    text = "; ".join(_key_text(k) for k in keys)
    return text + (f"; ... ({total - len(keys):,} more)" if total > len(keys) else "")


def _short(value: str | None, width: int = 40) -> str:
    if value is None:
        return "NULL"
    return repr(value if len(value) <= width else value[:width] + "…")
