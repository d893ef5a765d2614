"""What the role of a DSN may do on its server, as observers check it before a component tries.

Owns: `can_replicate` (the REPLICATION attribute, or superuser: what a `replication=database`
session needs; without it the server refuses capture's stream with SQLSTATE 42501).
Must not: change a role, or read anything but the session's own role.
"""

from __future__ import annotations

import psycopg

#: The SQLSTATE the server refuses a replication connection with when the role cannot replicate.
NO_REPLICATION_SQLSTATE = "42501"


def can_replicate(conn: psycopg.Connection) -> bool:
    """True when the session's role may open a replication connection (REPLICATION or superuser)."""
    row = conn.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


__all__ = ["NO_REPLICATION_SQLSTATE", "can_replicate"]
