"""Where a running `splitter verify` is, per service, kept in the service database.

Owns: `splitter.verify_progress` (one row per service: tables compared of how many, tables found
different, when it started, last moved and finished).  `splitter verify` writes it as each table is
done; the service's worker exports it as metrics, so a Prometheus that scrapes the daemon sees the
progress of a verify an operator runs from anywhere.  Must not: hold verify's results (the report is
the command's output) or be read for decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.verify_progress (
            service text PRIMARY KEY,
            tables_checked integer NOT NULL,
            tables_total integer NOT NULL,
            tables_mismatched integer NOT NULL,
            started_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )"""
    ).format(SCHEMA),
]


@dataclass(frozen=True)
class VerifyProgress:
    tables_checked: int
    tables_total: int
    tables_mismatched: int
    finished: bool


def started(conn: psycopg.Connection, service: str, tables_total: int) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.verify_progress (service, tables_checked, tables_total, tables_mismatched, started_at) "
                "VALUES (%s, 0, %s, 0, now()) ON CONFLICT (service) DO UPDATE SET tables_checked = 0, "
                "tables_total = excluded.tables_total, tables_mismatched = 0, started_at = now(), updated_at = now(), "
                "finished_at = NULL").format(SCHEMA), (service, tables_total))


def table_done(conn: psycopg.Connection, service: str, mismatched: bool, last: bool) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.verify_progress SET tables_checked = tables_checked + 1, "
                "tables_mismatched = tables_mismatched + %s, updated_at = now(), "
                "finished_at = CASE WHEN %s THEN now() END WHERE service = %s").format(SCHEMA),
        (1 if mismatched else 0, last, service))


def read(conn: psycopg.Connection, service: str) -> VerifyProgress | None:
    row = conn.execute(
        sql.SQL("SELECT tables_checked, tables_total, tables_mismatched, finished_at IS NOT NULL "
                "FROM {}.verify_progress WHERE service = %s").format(SCHEMA), (service,)).fetchone()
    return VerifyProgress(*row) if row else None
