"""CPU time of groups of processes over a window: utime + stime from /proc/<pid>/stat.

Owns: `CpuWindow` (sample named groups of pids at the start of a window, every `interval` during it and
at its end; report CPU seconds per group), `process_cpu`, `with_descendants` and `per_row_us`.
Must not: decide which processes belong to a group (the caller lists them, e.g. from pg_stat_activity),
or measure anything else.

A process is identified by (pid, start time), so a recycled pid is a new process.  A process already
running when the window opens counts from its value then; one born inside the window counts from 0 (all
of its CPU is the window's).  A process that exits inside the window counts up to the last time it was
seen (the periodic samples exist for that: the kernel hands a dead child's CPU to its parent's cutime,
out of reach here); what it used after that sample is lost, and `lost_pids` counts such processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from devtools.embedded.process import descendants

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: group name -> pids that belong to it right now
Groups = Callable[[], Mapping[str, Iterable[int]]]
Key = tuple[int, int]  # (pid, start time in clock ticks since boot)


def process_cpu(pid: int) -> tuple[Key, float] | None:
    """((pid, start time), utime + stime in seconds) of a live process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    if fields[0] in ("Z", "X"):
        return None
    return (pid, int(fields[19])), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _alive(key: Key) -> bool:
    got = process_cpu(key[0])
    return got is not None and got[0] == key


def with_descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and every live descendant of them (a launcher may run the real server as a child)."""
    return [found for pid in pids for found in (pid, *descendants(pid))]


class CpuWindow:
    """CPU seconds each group used between `__init__` and `stop()`, sampled every `interval` seconds."""

    def __init__(self, groups: Groups, interval: float = 1.0) -> None:
        self._groups = groups
        self._lock = threading.Lock()
        self._first: dict[str, dict[Key, float]] = {}
        self._last: dict[str, dict[Key, float]] = {}
        self._sample(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="cpu-sampler", daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        with self._lock:
            for group, pids in self._groups().items():
                seen = self._last.setdefault(group, {})
                for pid in set(pids):
                    got = process_cpu(pid)
                    if got is None:
                        continue
                    key, secs = got
                    if first:
                        self._first.setdefault(group, {})[key] = secs
                    seen[key] = secs

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def stop(self) -> dict[str, Any]:
        """{"seconds": {group: CPU s}, "processes": {group: n}, "lost_pids": {group: n}} for the window."""
        self._stop.set()
        self._thread.join(10)
        self._sample()
        seconds: dict[str, float] = {}
        processes: dict[str, int] = {}
        lost: dict[str, int] = {}
        for group, seen in self._last.items():
            first = self._first.get(group, {})
            seconds[group] = round(sum(v - first.get(k, 0.0) for k, v in seen.items()), 3)
            processes[group] = len(seen)
            lost[group] = sum(1 for k in seen if not _alive(k))
        return {"seconds": seconds, "processes": processes, "lost_pids": lost}


def per_row_us(seconds: dict[str, float], rows: int) -> dict[str, float]:
    """CPU µs per row for each group, and their "total"."""
    out = {g: round(1e6 * s / rows, 1) for g, s in seconds.items()} if rows else {}
    if rows:
        out["total"] = round(1e6 * sum(seconds.values()) / rows, 1)
    return out
