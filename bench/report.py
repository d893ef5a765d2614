"""Rendering of the catch-up stage's figures, and bench/results.json (the tracked one-object summary).

Owns: the catch-up and CPU rows of the printed table (`catchup_rows`), the catch-up section of the
results Markdown (`catchup_md`), and `figures`/`write_results_json` (every headline figure with its
peer, ratio and goal).  Must not: measure anything or read anything but a latest.json-shaped result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_JSON = Path(__file__).resolve().parent / "results.json"
Row = tuple[str, str, str, str, str]


def _n(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{unit}"


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f} µs"


def catchup_rows(r: dict[str, Any]) -> list[Row]:
    c = r.get("catchup")
    if not c:
        return []
    rows: list[Row] = []
    for s in c["sizes"]:
        rows.append((f"6 catch-up of {s['backlog']:,} row changes, rows/s", _n(s["splitter"]["rows_per_s"]),
                     f"{_n(s['native']['rows_per_s'])} native", f"{s['ratio']:.2f}", ">= 1.5"))
        cpu = s["cpu"]
        ratio = cpu.get("ratio")
        rows.append(("  CPU per source row change, all processes", _us(cpu["splitter_us_per_row"].get("total")),
                     f"{_us(cpu['native_us_per_row'].get('total'))} native", "-" if ratio is None else f"{ratio:.2f}",
                     "<= 1.0"))
    return rows


def _groups(us: dict[str, float]) -> str:
    return ", ".join(f"{g} {v:,.1f}" for g, v in sorted(us.items(), key=lambda kv: -kv[1]) if g != "total")


def catchup_md(r: dict[str, Any]) -> list[str]:
    c = r.get("catchup")
    if not c:
        return []
    out = [f"Backlog catch-up (capture running during the load; the load is the workload unthrottled on "
           f"{c['threads']} connections):", "",
           "| backlog row changes | WAL MB | load rows/s | capture confirmed after | splitter s (first checkpoint "
           "move) | splitter rows/s | target rows | native s (first move) | native rows/s | ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for s in c["sizes"]:
        ld, sp, na = s["load"], s["splitter"], s["native"]
        out.append(f"| {ld['rows']} | {ld['wal_bytes'] / 1e6:.1f} | {ld['rows_per_s']} | "
                   f"{ld['capture_drained_after_s']} s | {sp['seconds']} ({sp['first_checkpoint_move_s']}) | "
                   f"{sp['rows_per_s']} | {sp['target_rows']} | {na['seconds']} ({na['first_move_s']}) | "
                   f"{na['rows_per_s']} | {s['ratio']:.2f} |")
    out.append("")
    best = ((r.get("e2e") or {}).get("native") or {}).get("best") or {}
    ceiling = max(s["load"]["rows_per_s"] for s in c["sizes"])
    e2e_note = (f"; end to end, native's {best['rows_per_s']:,} rows/s was "
                f"{'generator-bound' if best.get('generator_bound') else 'not generator-bound'} "
                f"({r['args']['threads']} connections, throttled)") if best else ""
    out += [f"Load generator ceiling: {ceiling:,} rows/s unthrottled on {c['threads']} connections, with "
            f"capture draining alongside{e2e_note}.", ""]
    out += ["CPU per source row change, µs (utime+stime from /proc; splitter = its catch-up plus capture's side "
            "during the load):", ""]
    for s in c["sizes"]:
        cpu = s["cpu"]
        out.append(f"- {s['backlog']:,}: splitter {_us(cpu['splitter_us_per_row'].get('total'))} "
                   f"({_groups(cpu['splitter_us_per_row'])}; catch-up alone "
                   f"{_us(cpu['splitter_catch_up_us_per_row'].get('total'))}, of it the workers' start-up "
                   f"{_us(cpu.get('worker_startup_us_per_row'))}; capture's side during the load "
                   f"{_us(cpu['during_load_us_per_row'].get('total'))}); native "
                   f"{_us(cpu['native_us_per_row'].get('total'))} ({_groups(cpu['native_us_per_row'])})")
        for m in s.get("count_mismatches") or []:
            out.append(f"  - WARNING, row counts differed after this catch-up: {m}")
    return [*out, ""]


def _figure(splitter: Any, peer: Any, ratio: float | None, goal: str, **extra: Any) -> dict[str, Any]:
    return {"splitter": splitter, "peer": peer, "ratio": None if ratio is None else round(ratio, 3), "goal": goal,
            **extra}


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """Every headline figure as {splitter, peer, ratio, goal}; a stage that did not run has none."""
    out: dict[str, Any] = {}
    c = r.get("capture")
    if c:
        out["capture"] = _figure(c["splitter_rows_per_s"], c["pg_recvlogical_rows_per_s"], c["ratio"], ">= 0.7",
                                 unit="rows/s", peer_is="pg_recvlogical")
    e = r.get("e2e")
    if e:
        sb, nb = e["splitter"].get("best") or {}, e["native"].get("best") or {}
        s, n = sb.get("rows_per_s"), nb.get("rows_per_s")
        out["e2e_sustained"] = _figure(s, n, s / n if s and n else None, ">= 1.0", unit="rows/s",
                                       peer_is="native logical replication",
                                       peer_generator_bound=bool(nb.get("generator_bound")))
        half = e["splitter"].get("half_rate")
        if half:
            worst = max(v["p99_ms"] for v in half["lag"].values())
            out["e2e_p99_half_rate_ms"] = _figure(worst, None, None, "< 500", unit="ms",
                                                  rows_per_s=half["rows_per_s"])
    cu = r.get("catchup")
    if cu:
        for s in cu["sizes"]:
            out[f"catchup_{s['backlog']}"] = _figure(s["splitter"]["rows_per_s"], s["native"]["rows_per_s"],
                                                     s["ratio"], ">= 1.5", unit="rows/s",
                                                     peer_is="native logical replication", rows=s["load"]["rows"])
        big = max(cu["sizes"], key=lambda s: s["backlog"])
        cpu = big["cpu"]
        out["cpu_us_per_row"] = _figure(cpu["splitter_us_per_row"].get("total"), cpu["native_us_per_row"].get("total"),
                                        cpu.get("ratio"), "<= 1.0", unit="µs per source row change",
                                        backlog=big["backlog"], peer_is="native logical replication",
                                        splitter_groups=cpu["splitter_us_per_row"],
                                        native_groups=cpu["native_us_per_row"])
        if "e2e_sustained" in out:
            # The load generator's own ceiling (unthrottled, while the backlog was written) next to both rates.
            out["e2e_sustained"]["generator_ceiling_rows_per_s"] = max(s["load"]["rows_per_s"] for s in cu["sizes"])
    b = r.get("backfill")
    if b:
        out["backfill"] = _figure(b["splitter_rows_per_s"], b["baseline_rows_per_s"], b["ratio"], ">= 0.8",
                                  unit="rows/s", peer_is="psql COPY pipes")
    m = r.get("memory")
    if m:
        a, z = m["sizes"]
        out["memory_capture"] = _figure(z["capture_peak_rss_mb"], a["capture_peak_rss_mb"], m["capture_growth"],
                                        "~ 1.0", unit="MB peak RSS at 10x the data; peer = at 1x")
        out["memory_worker"] = _figure(z["worker_peak_rss_mb"], a["worker_peak_rss_mb"], m["worker_growth"], "~ 1.0",
                                       unit="MB peak RSS at 10x the data; peer = at 1x", worker=m["worker_service"])
    return out


def write_results_json(r: dict[str, Any], path: Path = RESULTS_JSON) -> Path:
    path.write_text(json.dumps({"finished": r.get("finished"), "command": r.get("command"),
                                "load_average_before": r.get("load_average_before"),
                                "figures": figures(r)}, indent=2, ensure_ascii=False) + "\n")
    return path
