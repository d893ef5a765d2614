"""Memory: peak RSS (VmHWM) of `python -m splitter capture` and of one worker at two dataset sizes 10x apart.

For each size a fresh source database (`m<scale>_bento_social`, datagen at that scale) and seven fresh
service databases are created.  Then, as child processes with SPLITTER_* environment variables:

1. capture starts on a new slot: it runs the initial copy of all seven services from the slot's
   snapshot (the data set itself), then streams; a burst of 20 x scale row changes (transactions of
   10) and then one transaction of 40 x scale notification inserts (a bulk load: 10x larger at the
   larger size, so the worker's memory shows whether it holds a transaction whole) are committed and
   capture drains them into its own topic (until the slot's confirmed_flush_lsn passes their end);
2. the notification worker (the service the burst's inserts go to) starts and applies that whole
   backlog from the log (until its checkpoint passes the burst's end).

VmHWM is read from /proc/<pid>/status just before each process is stopped.  The figure that matters
is large/small: a streaming design keeps it near 1.0 however big the data.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    ROOT,
    Servers,
    burst,
    create_dataset,
    current_lsn,
    settings_env,
    settings_for,
    stop_process,
    vm_hwm_kb,
)

WORKER = "notification"


def _wait(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what} did not finish within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def one_size(servers: Servers, scale: int, logdir: Path) -> dict[str, Any]:
    name = f"m{scale}"
    ds = create_dataset(servers, scale, prefix=f"{name}_")
    settings = settings_for(servers, ds, topic=f"{name}.changes", slot=name, publication=name)
    env = settings_env(settings)
    with open(logdir / f"memory-{name}-capture.log", "wb") as out:
        capture = subprocess.Popen([sys.executable, "-m", "splitter", "capture"], env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        src = psycopg.connect(settings.source_dsn, autocommit=True)
        copy_s = _wait("capture (initial copy)", lambda: src.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active", (name,)).fetchone()[0] > 0,
            capture, 600)
        rows, _ = burst(settings.source_dsn, 2 * scale)
        big_txn_rows = 40 * scale
        src.execute("INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read, "
                    "created_at, updated_at) SELECT md5(n.id || g::text), receiver_id, actor_id, content, action, "
                    "is_sent, is_read, created_at, updated_at FROM notifications n CROSS JOIN generate_series(1, %s) g "
                    "LIMIT %s", (big_txn_rows // max(1, ds.counts.get("notifications", 1)) + 1, big_txn_rows))
        end = current_lsn(src)
        drain_s = _wait("capture (drain)", lambda: src.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (name,)).fetchone()[0] >= end, capture, 600)
        capture_kb = vm_hwm_kb(capture.pid)
        with open(logdir / f"memory-{name}-worker.log", "wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "splitter", "worker", "--service", WORKER], env=env,
                                      cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            tgt = psycopg.connect(settings.target_dsn(WORKER), autocommit=True)
            apply_s = _wait("worker", lambda: tgt.execute(
                "SELECT commit_lsn - '0/0'::pg_lsn FROM splitter.checkpoints WHERE service = %s",
                (WORKER,)).fetchone()[0] >= end, worker, 600)
            worker_kb = vm_hwm_kb(worker.pid)
            capture_kb = max(capture_kb, vm_hwm_kb(capture.pid))
            tgt.close()
        finally:
            stop_process(worker)
        src.close()
    finally:
        stop_process(capture)
    source_rows = sum(ds.counts.values())
    return {
        "scale": scale, "source_rows": source_rows, "burst_rows": rows, "big_transaction_rows": big_txn_rows,
        "capture_peak_rss_mb": round(capture_kb / 1024, 1), "worker_peak_rss_mb": round(worker_kb / 1024, 1),
        "capture_copy_s": round(copy_s, 1), "capture_drain_s": round(drain_s, 1),
        "capture_drain_rows_per_s": round((rows + big_txn_rows) / drain_s) if drain_s else None,
        "worker_apply_s": round(apply_s, 1),
    }


def run(servers: Servers, small: int, logdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    sizes = []
    for scale in (small, small * 10):
        r = one_size(servers, scale, logdir)
        log(f"    scale {scale}: capture {r['capture_peak_rss_mb']} MB, worker[{WORKER}] {r['worker_peak_rss_mb']} MB "
            f"({r['source_rows']} source rows, {r['burst_rows']} streamed changes, one transaction of "
            f"{r['big_transaction_rows']} rows)")
        sizes.append(r)
    a, b = sizes
    return {
        "worker_service": WORKER,
        "sizes": sizes,
        "capture_growth": round(b["capture_peak_rss_mb"] / a["capture_peak_rss_mb"], 2),
        "worker_growth": round(b["worker_peak_rss_mb"] / a["worker_peak_rss_mb"], 2),
    }
