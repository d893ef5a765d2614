"""The plain text of `splitter status`: one table per refresh (or its JSON), for pipes, files and cron.

Owns: `render_table` (the source line, one row per service, the components stopped or degraded and the
verdict line) and `emit` (one refresh on a stream: the table with the cutover and ownership sections,
or exactly one JSON object).  The live table on a terminal is splitter.cli.status_view's.
Must not: read anything or decide anything (splitter.ops.status reads, splitter.ops.status_verdict
judges), or print a DSN.
"""

from __future__ import annotations

from typing import TextIO

from splitter.ops.status_components import human_bytes, human_seconds
from splitter.ops.status_model import SourceStatus, Status, Verdict
from splitter.ops.status_ownership import render_ownership


def source_line(source: SourceStatus) -> str:
    """The source's line above the table (the plain view's and the live table's)."""
    return f"source {source.database}: " + (
        f"WAL {source.current_lsn}, slot {source.slot} {source.slot_state}, slot lag "
        f"{human_bytes(source.slot_lag_bytes)}, retained WAL {human_bytes(source.retained_wal_bytes)}"
        if source.reachable else "misconfigured" if source.error_class == "configuration" else "unreachable") \
        + (f"  ({source.error})" if source.error else "")


def verdict_line(verdict: Verdict) -> str:
    """The exit code and why, under the table."""
    return (f"exit {verdict.exit_code} ({verdict.meaning}, --max-lag {verdict.max_lag_seconds:g}s)"
            + (": " + "; ".join(verdict.reasons) if verdict.reasons else ""))


def render_table(status: Status) -> str:
    lines = [source_line(status.source)]
    header = ("SERVICE", "STATE", "LAG", "LAG BYTES", "ROWS/S", "OFFSET", "DEAD", "LAST ERROR")
    rows = [header]
    for st in status.services:
        rows.append((st.service, st.state, human_seconds(st.lag_seconds), human_bytes(st.lag_bytes),
                     "-" if st.rows_per_second is None else f"{st.rows_per_second:g}",
                     "-" if st.applied_offset is None else str(st.applied_offset),
                     "-" if st.dead_letters is None else str(st.dead_letters), st.last_error or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    lines += [f"{c.component} {c.summary()}" for c in status.stopped if c.component != "worker"]  # workers: above
    lines += [f"{c.component} {c.summary()}" for c in status.degraded]
    if status.verdict is not None:
        lines.append(verdict_line(status.verdict))
    return "\n".join(lines)


def emit(status: Status, as_json: bool, stream: TextIO, clear: bool) -> None:
    """One refresh on `stream`: the JSON object alone, or the table and its sections (`clear`: wipe first)."""
    if as_json:
        stream.write(status.as_json() + "\n")
    else:
        if clear:
            stream.write("\x1b[H\x1b[2J")
        stream.write(f"{status.taken_at}\n{render_table(status)}\n")
        if status.cutover_text:
            stream.write(f"\n{status.cutover_text}\n")
        if status.ownership:
            stream.write(f"\n{render_ownership(status.ownership)}\n")
    stream.flush()


__all__ = ["emit", "render_table"]
