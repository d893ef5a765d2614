"""The cutover state in the source's `splitter` schema: one row per service (state, positions, history).

Owns: every read and write of `splitter.cutover` (and its routing and history tables).  Must not:
decide transitions (splitter.ops.cutover does) or fence, switch or stream.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA, STATE_SCHEMA


def read_states(conn: psycopg.Connection) -> dict[str, tuple[str, str | None]]:
    """service → (state, last error) for every service with a cutover row; empty before the first cutover."""
    have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.cutover",)).fetchone()
    if not have or not have[0]:
        return {}
    rows = conn.execute(sql.SQL("SELECT service, state::text, error FROM {}.cutover").format(SCHEMA)).fetchall()
    return {service: (state, error) for service, state, error in rows}
