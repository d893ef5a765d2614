"""The PostgreSQL client edge: opening connections, turning driver errors into splitter errors, lock keys.

Owns: `connect` (every connection splitter opens goes through it, with a connect timeout and an
application name), `wrap_db_error` (class from SQLSTATE, message masked of secrets; the one place a
psycopg error becomes a splitter error) and `lock_key`, the one scheme for single-key advisory locks.
Must not: know any table, or decide what a caller does with an error.
"""

from __future__ import annotations

import zlib

import psycopg

from splitter.core.dsn import mask_secrets
from splitter.core.errors import classify_sqlstate

#: A PostgreSQL connection, for floors above connectors/ that hand one from connector call to connector call
#: (they never import the driver themselves).
Connection = psycopg.Connection
#: The driver's error class, for the few callers that must tell a driver error from their own (rare: connector
#: functions raise splitter errors).
DatabaseError = psycopg.Error


def wrap_db_error(exc: psycopg.Error, what: str, *dsns: str) -> Exception:
    """A splitter error for a driver error: class from SQLSTATE, message masked of secrets."""
    kind = classify_sqlstate(getattr(exc, "sqlstate", None))
    return kind(mask_secrets(f"{what}: {exc}".strip(), *dsns))


def connect(dsn: str, what: str, *, autocommit: bool = False, application_name: str = "splitter") -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, application_name=application_name, connect_timeout=10)
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"cannot connect to {what}", dsn) from exc


def lock_key(name: str) -> int:
    """The bigint key of the advisory lock called `name` (stable across versions: it is in pg_locks)."""
    return zlib.crc32(name.encode()) - (1 << 31)
