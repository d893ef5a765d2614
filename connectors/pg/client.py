"""The PostgreSQL client edge: opening connections, turning driver errors into splitter errors, lock keys.

Owns: `connect` (every connection splitter opens goes through it, with a connect timeout, an
application name and the session settings values' text forms depend on, `TEXT_FORM_SETTINGS`),
`wrap_db_error` (class from SQLSTATE, message masked of secrets; the one place a psycopg error becomes a
splitter error), `connect_failure` (the same for a connection the server refused: the SQLSTATE libpq does
not hand over at connect time, read from its protocol trace), `sqlstate_of` and `lock_key`, the one scheme
for single-key advisory locks.
Must not: know any table, decide what a caller does with an error, or log a protocol trace.
"""

from __future__ import annotations

import os
import re
import select
import tempfile
import threading
import time
import zlib

import psycopg
from psycopg import pq, sql

from splitter.core.dsn import dsn_origin, mask_secrets
from splitter.core.errors import ConfigurationError, FatalError, RetryableError, SplitterError, classify_sqlstate

#: A PostgreSQL connection, for floors above connectors/ that hand one from connector call to connector call
#: (they never import the driver themselves).
Connection = psycopg.Connection
#: The driver's error class, for the few callers that must tell a driver error from their own (rare: connector
#: functions raise splitter errors).
DatabaseError = psycopg.Error


def wrap_db_error(exc: psycopg.Error, what: str, *dsns: str) -> Exception:
    """A splitter error for a driver error: class from SQLSTATE, message masked of secrets.  A ProgrammingError
    the driver raised itself (no SQLSTATE: a statement it could not send, such as a placeholder miscount) is
    fatal, as no retry can change it; other errors without a SQLSTATE are a connection's, and retryable."""
    sqlstate = getattr(exc, "sqlstate", None)
    kind = FatalError if sqlstate is None and isinstance(exc, psycopg.ProgrammingError) else classify_sqlstate(sqlstate)
    return kind(mask_secrets(f"{what}: {exc}".strip(), *dsns))


#: The settings a value's text form depends on (and the zone of timestamptz conversions), pinned in every
#: session splitter opens, whatever the server's, the database's or the role's defaults say: values cross
#: from one database to another as text, so both ends must print and read them alike.  A source database
#: set to DateStyle 'SQL, DMY' printed "15/03/0044 12:00:00 BC", which a target in 'German, MDY' refused;
#: a negative extra_float_digits prints floats rounded.  3 is exact on every version (12 and later print
#: the shortest exact form for any value above 0).
TEXT_FORM_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
)


def pin_text_forms_sql() -> str:
    """One statement that sets `TEXT_FORM_SETTINGS` for the session (plain SQL: a walsender runs it too)."""
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        for name, value in TEXT_FORM_SETTINGS)).as_string(None)


#: Seconds libpq waits for a server to answer (per host).
CONNECT_TIMEOUT = 10
#: A probe that found no server error is trusted this long for the same failure (see `_probe`).
_PROBE_REUSE = 60.0
_ERROR_RESPONSE_CODE = re.compile(r' C "([0-9A-Z]{5})"')
_probes: dict[tuple[str, str], tuple[float, str | None, bool]] = {}
_probes_lock = threading.Lock()


def connect(dsn: str, what: str, *, autocommit: bool = False, application_name: str = "splitter") -> psycopg.Connection:
    """A connection to `what` (e.g. `SOURCE_DATABASE`); a failure names it and where its DSN is set."""
    what += dsn_origin(what)
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, application_name=application_name,
                               connect_timeout=CONNECT_TIMEOUT)
    except psycopg.errors.ConnectionTimeout as exc:  # no server answered in time: nothing to probe
        raise RetryableError(mask_secrets(f"cannot connect to {what}: {exc}", dsn)) from exc
    except psycopg.Error as exc:
        if exc.sqlstate:  # an error after the connection was made (e.g. setting application_name)
            raise wrap_db_error(exc, f"cannot connect to {what}", dsn) from exc
        needs_password = bool(exc.pgconn is not None and exc.pgconn.needs_password)
        failure = connect_failure(dsn, str(exc), needs_password, f"cannot connect to {what}", dsn, cause=exc)
        raise failure from failure.__cause__ or exc
    try:
        conn.execute(pin_text_forms_sql())
        if not autocommit:
            conn.commit()  # set_config(..., false) outlives the transaction; the caller starts on a clean one
    except psycopg.Error as exc:
        conn.close()
        raise wrap_db_error(exc, f"cannot set the session's text forms on {what}", dsn) from exc
    return conn


def connect_failure(conninfo: str, message: str, needs_password: bool, what: str, *dsns: str,
                    cause: BaseException | None = None) -> SplitterError:
    """The splitter error for a connection attempt to `conninfo` that failed with libpq's `message`.

    With a SQLSTATE, its `__cause__` is the driver error of that code (whose own cause is `cause`), as
    `sqlstate_of` finds it: raise it `from failure.__cause__ or cause`.

    How the class is decided: libpq keeps the fields of an error the server sends while a connection
    starts only in its message text (psycopg's `sqlstate` is None there), so the SQLSTATE is read from
    a second attempt with libpq's protocol trace on (`_probe`: the `C` field of the server's
    ErrorResponse, never the message).  At connect time only a configuration class (28 wrong password
    or no pg_hba entry, 3D missing database, 42501 no REPLICATION attribute) is final: any other
    refusal (53300 too many connections, 57P03 starting up or shutting down, 55000 the database
    does not accept connections now) is the server's current state, which may change, and is retried.
    With no ErrorResponse at all (refused, unreachable, timeout, TLS), the fault is the network's and
    is retried, except when libpq reports that the server asked for a password the DSN lacks.
    """
    sqlstate, asked_password = _probe(conninfo, message)
    text = mask_secrets(message.strip(), *dsns)
    if sqlstate:
        name = _error_name(sqlstate)
        configuration = classify_sqlstate(sqlstate) is ConfigurationError
        kind: type[SplitterError] = ConfigurationError if configuration else RetryableError
        error = kind(f"{what} (SQLSTATE {sqlstate} {name}, "
                     f"{'configuration: not retried' if configuration else 'retried'}): {text}")
        # The cause carries the code, as the driver error would if libpq handed it over (`sqlstate_of`).
        driver = _driver_error(sqlstate, text)
        driver.__cause__ = cause
        error.__cause__ = driver
        return error
    if needs_password or asked_password:
        return ConfigurationError(f"{what} (the server asks for a password the DSN does not give: "
                                  f"configuration, not retried): {text}")
    return RetryableError(f"{what}: {text}")


def _error_name(sqlstate: str) -> str:
    try:
        return psycopg.errors.lookup(sqlstate).__name__
    except KeyError:
        return "unknown"


def _driver_error(sqlstate: str, text: str) -> psycopg.Error:
    try:
        return psycopg.errors.lookup(sqlstate)(text)
    except KeyError:
        return psycopg.OperationalError(text)


def sqlstate_of(exc: BaseException | None) -> str | None:
    """The SQLSTATE behind an error (its own, or the first of its causes that has one); None if none."""
    seen = 0
    while exc is not None and seen < 10:
        code = getattr(exc, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        exc, seen = exc.__cause__, seen + 1
    return None


def _probe(conninfo: str, failure: str) -> tuple[str | None, bool]:
    """(SQLSTATE of the ErrorResponse the server refuses a new connection with, server asked for a password).

    Each probe leaks one small stdio stream (libpq's PQuntrace does not close the one psycopg opens for
    PQtrace), so a probe that found no server error or a retryable one is reused for `_PROBE_REUSE`
    seconds while the same failure repeats (a long outage retried every 30 s); a configuration answer
    is never reused (the component stops on it).
    """
    key = (conninfo, failure)
    now = time.monotonic()
    with _probes_lock:
        for k in [k for k, (at, _c, _p) in _probes.items() if now - at > _PROBE_REUSE]:
            del _probes[k]
        cached = _probes.get(key)
    if cached is not None:
        return cached[1], cached[2]
    sqlstate, asked = _traced_attempt(conninfo)
    if sqlstate is None or classify_sqlstate(sqlstate) is not ConfigurationError:
        with _probes_lock:
            _probes[key] = (now, sqlstate, asked)
    return sqlstate, asked


def _traced_attempt(conninfo: str) -> tuple[str | None, bool]:
    with tempfile.TemporaryFile() as trace:
        pgconn = pq.PGconn.connect_start(with_timeout(conninfo).encode())
        try:
            try:
                pgconn.trace(trace.fileno())
                pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            except psycopg.NotSupportedError:  # PQtrace is Linux-only in psycopg: no code, the network's fault
                return None, bool(pgconn.needs_password)
            try:
                _poll(pgconn, time.monotonic() + CONNECT_TIMEOUT)
            finally:
                # PQuntrace flushes the stdio stream (it is never closed): nothing may stay buffered in it
                # once this file's descriptor is closed and its number reused.
                pgconn.untrace()
            asked = bool(pgconn.needs_password)
        finally:
            pgconn.finish()
        # Read here and dropped: a trace holds the authentication exchange.
        lines = os.pread(trace.fileno(), 1 << 20, 0).decode(errors="replace").splitlines()
    codes = [m.group(1) for line in lines if line.startswith("B\t") and "\tErrorResponse\t" in line
             if (m := _ERROR_RESPONSE_CODE.search(line))]
    return (codes[-1] if codes else None), asked


def _poll(pgconn: pq.abc.PGconn, deadline: float) -> None:
    """Drive a connection started with connect_start until it is made, fails, or `deadline` passes."""
    if pgconn.status == pq.ConnStatus.BAD:
        return
    status: int = pq.PollingStatus.WRITING
    while status not in (pq.PollingStatus.OK, pq.PollingStatus.FAILED):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        fd = pgconn.socket
        if status == pq.PollingStatus.READING:
            select.select([fd], [], [], remaining)
        else:
            select.select([], [fd], [], remaining)
        status = pgconn.connect_poll()


def with_timeout(conninfo: str) -> str:
    """`conninfo` with libpq's connect_timeout set, unless it sets one."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    if params.get("connect_timeout"):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=str(CONNECT_TIMEOUT))


def lock_key(name: str) -> int:
    """The bigint key of the advisory lock called `name` (stable across versions: it is in pg_locks)."""
    return zlib.crc32(name.encode()) - (1 << 31)
