"""Connection-string helpers: masking secrets and deriving per-database DSNs.

Owns: every transformation of a DSN splitter performs.  Must not: log or print anything;
callers put `mask_dsn(...)` output, never the raw DSN, into messages, logs and metrics.
"""

from __future__ import annotations

import re
from typing import Final

from psycopg import conninfo

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@]*:)(?P<secret>[^@]*)(?P<tail>@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """Return `dsn` with any password replaced by `***` (URL and key=value forms)."""
    masked = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", dsn)
    return _KV_PASSWORD.sub(r"\g<head>***", masked)


def mask_secrets(text: str, *dsns: str) -> str:
    """Mask every password of `dsns` that appears anywhere in `text` (error messages from drivers)."""
    out = mask_dsn(text)
    for dsn in dsns:
        try:
            password = conninfo.conninfo_to_dict(dsn).get("password")
        except Exception:  # an unparsable DSN has no password we can find
            continue
        if password:
            out = out.replace(str(password), "***")
    return out


#: How every connection to the source names it (`connectors.pg.client.connect`'s `what`).
SOURCE_DATABASE: Final = "the source database"
_SERVICE_DATABASE = re.compile(r"database of service (?P<service>[A-Za-z_][A-Za-z0-9_]*)")


def service_database(service: str) -> str:
    """How every connection to a service database names it."""
    return f"database of service {service}"


def dsn_origin(what: str) -> str:
    """Where the operator sets the DSN of `what` (SOURCE_DATABASE or `service_database(S)`), for a connection
    error to name: ' (DSN from --source-dsn or SPLITTER_SOURCE_DSN)'; '' for anything else."""
    if what == SOURCE_DATABASE:
        return " (DSN from --source-dsn or SPLITTER_SOURCE_DSN)"
    m = _SERVICE_DATABASE.fullmatch(what)
    if m is None:
        return ""
    service = m["service"]
    return (f" (DSN from --target-dsn {service}=DSN or SPLITTER_TARGET_DSN_{service.upper()}; without either, the "
            f"source DSN with the service's database name)")


def dsn_database(dsn: str) -> str | None:
    """The database `dsn` names, or None if it names none; raises (libpq's message) if `dsn` is not a DSN."""
    dbname = conninfo.conninfo_to_dict(dsn).get("dbname")
    return str(dbname) if dbname is not None else None


def with_database(dsn: str, dbname: str) -> str:
    """Return `dsn` pointing at database `dbname`, every other parameter kept."""
    return conninfo.make_conninfo(dsn, dbname=dbname)


def with_params(dsn: str, **params: str) -> str:
    """Return `dsn` with extra connection parameters set (for example replication=database)."""
    return conninfo.make_conninfo(dsn, **params)
