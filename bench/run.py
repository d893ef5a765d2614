"""`python -m bench`: every comparison in one run, on one embedded cluster and broker, on the same data.

Order (each stage's state is the next one's starting point):

1. dataset: bento_social at --scale users plus seven empty service databases;
2. backfill (bench.backfill): psql COPY pipes vs splitter's initial copy; leaves the "splitter" slot
   and every service's checkpoint behind;
3. capture (bench.capture): pg_recvlogical vs splitter Capture on two slots holding the same burst;
4. end to end (bench.e2e): splitter (from a fresh copy), then native logical replication, stepped searches;
5. backlog catch-up (bench.catchup): splitter's workers vs native subscriptions draining the same backlog,
   rows/s and CPU per row change (bench.cpu), at each --backlogs size;
6. cutover write pause: only if `splitter.ops.cutover` exists;
7. memory (bench.memory): peak RSS of capture and a worker at --memory-scale and 10x that.

Prints a table of ratios, writes bench/results/latest.json (git-ignored), and (unless --no-readme)
rewrites the results section of bench/README.md between its markers and bench/results.json (tracked:
the headline figures with their peers, ratios and goals; bench.report).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import backfill, capture, catchup, e2e, memory, report
from bench.common import RESULTS_DIR, create_dataset, machine, settings_for, start_servers, summarise_raw

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def log(message: str) -> None:
    print(message, flush=True)


def _sizes(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=5000, help="datagen users of the main data set (default 5000, "
                   "about 155k source rows)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per end-to-end rate step (default 20)")
    p.add_argument("--capture-rows", type=int, default=100_000, help="row changes in the capture burst")
    p.add_argument("--rate-start", type=float, default=50.0, help="first workload rate, operations/s")
    p.add_argument("--rate-factor", type=float, default=2.0, help="rate multiplier between steps")
    p.add_argument("--steps", type=int, default=6, help="most rate steps per system")
    p.add_argument("--threads", type=int, default=4, help="workload connections")
    p.add_argument("--memory-scale", type=int, default=None, help="smaller memory data set (default scale/10; the "
                   "larger one is 10x)")
    p.add_argument("--no-profile", action="store_true", help="skip py-spy profiles")
    p.add_argument("--backlogs", type=_sizes, default=[20_000, 500_000], help="catch-up backlog sizes in row "
                   "changes, comma-separated (default 20000,500000)")
    p.add_argument("--catchup-threads", type=int, default=8, help="workload connections loading each catch-up "
                   "backlog (unthrottled; default 8)")
    p.add_argument("--skip", action="append", default=[], choices=["e2e", "catchup", "memory"],
                   help="skip a stage")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md's results nor "
                   "bench/results.json (the tracked files)")
    p.add_argument("--report-only", action="store_true", help="re-render the table and README from "
                   "bench/results/latest.json and the raw profiles, without running anything")
    return p.parse_args(argv)


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{unit}"


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    c = r["capture"]
    rows.append(("1 capture, rows/s (slot -> broker)", _fmt(c["splitter_rows_per_s"]),
                 f"{_fmt(c['pg_recvlogical_rows_per_s'])} pg_recvlogical", f"{c['ratio']:.2f}", ">= 0.7"))
    e = r.get("e2e")
    if e:
        sb, nb = e["splitter"].get("best"), e["native"].get("best")
        s_rate, n_rate = (sb or {}).get("rows_per_s"), (nb or {}).get("rows_per_s")
        ratio = f"{s_rate / n_rate:.2f}" if s_rate and n_rate else "-"
        note = lambda b: " (generator-bound)" if b and b["generator_bound"] else ""  # noqa: E731
        rows.append(("2 end to end, sustained rows/s (lag <= 1 s)", _fmt(s_rate) + note(sb),
                     f"{_fmt(n_rate)}{note(nb)} native", ratio, ">= 1.0"))
        half = e["splitter"].get("half_rate")
        if half:
            worst = max(v["p99_ms"] for v in half["lag"].values())
            rows.append((f"  p99 lag at half rate ({half['rows_per_s']} rows/s), worst service", f"{worst} ms",
                         "", "", "< 500 ms"))
        cu = r.get("catchup")
        if cu:  # how far the load generator itself goes: the bound of a "generator-bound" rate above
            ceiling = max(s["load"]["rows_per_s"] for s in cu["sizes"])
            rows.append(("  load generator's ceiling (unthrottled, catch-up loads)", _fmt(ceiling), "", "", ""))
    b = r["backfill"]
    rows.append(("3 backfill, rows/s (7 databases)", _fmt(b["splitter_rows_per_s"]),
                 f"{_fmt(b['baseline_rows_per_s'])} psql COPY pipes", f"{b['ratio']:.2f}", ">= 0.8"))
    rows.append(("4 cutover write pause", r["cutover"], "", "", ""))
    m = r.get("memory")
    if m:
        a, z = m["sizes"]
        rows.append((f"5 memory, peak RSS capture (scale {a['scale']} -> {z['scale']})",
                     f"{a['capture_peak_rss_mb']} -> {z['capture_peak_rss_mb']} MB", "", f"x{m['capture_growth']}",
                     "~ x1.0"))
        rows.append((f"  peak RSS worker[{m['worker_service']}]", f"{a['worker_peak_rss_mb']} -> "
                     f"{z['worker_peak_rss_mb']} MB", "", f"x{m['worker_growth']}", "~ x1.0"))
    rows += report.catchup_rows(r)
    head = ("figure", "splitter", "peer", "ratio", "goal")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(5)]
    line = lambda x: "| " + " | ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _profile_md(name: str, prof: dict[str, Any] | None) -> list[str]:
    if not prof or not prof.get("samples"):
        return []
    out = [f"**{name}** ({prof['samples']} samples) -- self time:", ""]
    out += [f"- {pct}% `{frame}`" for frame, pct in prof["self"][:8]]
    out += ["", "inclusive:", ""]
    out += [f"- {pct}% `{frame}`" for frame, pct in prof["inclusive"][:14]]
    return [*out, ""]


def steps_md(title: str, steps: list[dict[str, Any]]) -> list[str]:
    out = [f"{title}:", "", "| asked ops/s | ops/s | rows/s | max lag ms | sustained | p99 lag ms per service |",
           "|---|---|---|---|---|---|"]
    for s in steps:
        p99 = ", ".join(f"{k} {v['p99_ms']}" for k, v in s["lag"].items())
        out.append(f"| {s['asked_ops_per_s']:.0f} | {s['ops_per_s']:.0f} | {s['rows_per_s']} | {s['max_lag_ms']} | "
                   f"{'yes' if s['sustained'] else 'no'}{' (generator-bound)' if s['generator_bound'] else ''} | "
                   f"{p99} |")
    return [*out, ""]


def results_md(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"Run {r['finished']} with `{r['command']}` on {m['nproc']} CPUs ({m['cpu_model']}), "
           f"{m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}; {r['wall_seconds']:.0f} s wall"
           + (f"; load average before {', '.join(map(str, r['load_average_before']))}."
              if r.get("load_average_before") else "."),
           f"Data set: scale {r['args']['scale']} = {sum(r['dataset']['counts'].values())} source rows.", "",
           table(r), ""]
    c, b = r["capture"], r["backfill"]
    out += [f"Capture: {c['rows']} row changes in {c['transactions']} transactions "
            f"({c['wal_bytes'] / 1e6:.1f} MB WAL): "
            f"pg_recvlogical {c['pg_recvlogical_seconds']} s, splitter {c['splitter_seconds']} s (first record after "
            f"{c['splitter_first_record_after_s']} s).",
            f"Backfill: {b['rows']} target rows: psql pipes {b['baseline_seconds']} s, splitter initial_copy "
            f"{b['splitter_seconds']} s (per service: {b['per_service_seconds']}).", ""]
    e = r.get("e2e")
    if e:
        ts = e["native"]["table_sync"]
        out += [f"Native table sync (copy_data, column lists): {ts['rows']} rows in {ts['table_sync_seconds']} s = "
                f"{ts['rows_per_s']} rows/s.", ""]
        out += steps_md("Native logical replication steps", e["native"]["steps"])
        cu = e["splitter"]["catch_up"]
        out += [f"Splitter catch-up before its steps: {cu['wal_bytes'] / 1e6:.1f} MB of WAL backlog, "
                f"{cu['target_rows']} target rows, {cu['seconds']} s (including process start).", ""]
        out += steps_md("Splitter steps", e["splitter"]["steps"])
        if e["splitter"].get("half_rate"):
            out += steps_md("Splitter at half the sustained rate", [e["splitter"]["half_rate"]])
    out += report.catchup_md(r)
    mem = r.get("memory")
    if mem:
        out += ["Memory runs:", "", "| scale | source rows | streamed changes | of them in one transaction | "
                "capture MB | worker MB | capture drain rows/s | worker apply s |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {s['scale']} | {s['source_rows']} | {s['burst_rows'] + s.get('big_transaction_rows', 0)} | "
                f"{s.get('big_transaction_rows', 0)} | {s['capture_peak_rss_mb']} | "
                f"{s['worker_peak_rss_mb']} | {s['capture_drain_rows_per_s']} | {s['worker_apply_s']} |"
                for s in mem["sizes"]]
        out.append("")
    profs = r.get("profiles") or {}
    if profs:
        out += ["Profiles (py-spy, Python frames only; librdkafka and libpq threads are native and not shown):", ""]
        for name, prof in profs.items():
            out += _profile_md(name, prof)
    return "\n".join(out)


def update_readme(text: str) -> None:
    if not README.exists():
        return
    body = README.read_text()
    if START not in body or END not in body:
        body = body.rstrip() + f"\n\n## Latest results\n\n{START}\n{END}\n"
    head, _, rest = body.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def _raw_profile(name: str) -> tuple[Path, str | None]:
    """The raw py-spy file behind a profile entry of latest.json (see Profiler users)."""
    profiles = RESULTS_DIR / "profiles"
    if "in-process" in name:
        return profiles / "capture.raw", "Capture.run"
    if name.endswith(": capture"):
        return profiles / "e2e-capture.raw", None
    worker = name.rsplit("worker[", 1)[-1].rstrip("]")
    return profiles / f"e2e-{worker}.raw", None


def report_only() -> int:
    result = json.loads((RESULTS_DIR / "latest.json").read_text())
    for name in list(result.get("profiles", {})):
        raw, only = _raw_profile(name)
        if raw.exists():
            result["profiles"][name] = summarise_raw(raw, only=only)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    print(table(result))
    update_readme(results_md(result))
    report.write_results_json(result)
    return 0


def compile_sources() -> None:
    """Byte-compile splitter's own modules, as installing its wheel does: an editable install under
    PYTHONDONTWRITEBYTECODE (set on some machines) never writes them, and every worker the bench starts
    then compiles every module it imports again (a third of a worker's start-up, measured 2026-12-04)."""
    root = Path(__file__).resolve().parents[1]
    for package in ("splitter", "connectors", "devtools"):
        compileall.compile_dir(root / package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only()
    logging.basicConfig(level=logging.WARNING)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    logdir = RESULTS_DIR / "logs"
    logdir.mkdir(exist_ok=True)
    profile_dir = None if args.no_profile else RESULTS_DIR / "profiles"
    if profile_dir:
        profile_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    compile_sources()
    work = Path(tempfile.mkdtemp(prefix="splitter-bench-"))
    result: dict[str, Any] = {"args": vars(args), "machine": machine(),
                              "command": "python -m bench " + " ".join(argv or __import__("sys").argv[1:])}
    result["load_average_before"] = load_average()
    log(f"machine: {result['machine']}")
    log(f"load average before the run: {result['load_average_before']}")
    servers = start_servers(work)
    try:
        log(f"dataset: scale {args.scale}")
        ds = create_dataset(servers, args.scale)
        result["dataset"] = {"counts": ds.counts, "generate_seconds": round(ds.generate_seconds, 1)}
        settings = settings_for(servers, ds)

        log("backfill: psql COPY pipes vs splitter initial_copy")
        result["backfill"] = backfill.run(servers, settings)
        log(f"    {result['backfill']}")

        log(f"capture: pg_recvlogical vs splitter, {args.capture_rows} row changes")
        result["capture"] = capture.run(settings, args.capture_rows, profile_dir)
        log(f"    { {k: v for k, v in result['capture'].items() if k != 'profile'} }")

        profiles: dict[str, Any] = {"capture burst: Capture (in-process)": result["capture"].pop("profile")}
        if "e2e" not in args.skip:
            rates = [args.rate_start * args.rate_factor**i for i in range(args.steps)]
            log("end to end: splitter (after a fresh, untimed initial copy)")
            backfill.reset(settings)
            split = e2e.run_splitter(settings, rates, None, args.seconds, args.threads, logdir, profile_dir, log)
            prof = split.pop("profile", None)
            if prof:
                rate = prof.pop("rate")
                for k, v in prof.items():
                    profiles[f"end to end at {rate['asked_ops_per_s']:.0f} ops/s ({rate['rows_per_s']} rows/s, max lag "
                             f"{rate['max_lag_ms']} ms): {k}"] = v
            log("end to end: native logical replication")
            native = e2e.run_native(servers, settings, rates, args.seconds, args.threads, log)
            result["e2e"] = {"native": native, "splitter": split}

        if "catchup" not in args.skip:
            if "e2e" in args.skip:
                backfill.reset(settings)  # the capture burst is not the catch-up's business
            log(f"backlog catch-up: splitter workers vs native subscriptions, backlogs {args.backlogs}")
            result["catchup"] = catchup.run(servers, settings, args.backlogs, args.catchup_threads, logdir, log)

        result["cutover"] = ("not measured yet (splitter.ops.cutover exists; bench does not drive it)"
                             if importlib.util.find_spec("splitter.ops.cutover") else "n/a (cutover not built yet)")

        if "memory" not in args.skip:
            small = args.memory_scale or max(100, args.scale // 10)
            log(f"memory: scale {small} and {small * 10}")
            result["memory"] = memory.run(servers, small, logdir, log)
        result["profiles"] = {k: v for k, v in profiles.items() if v}
    finally:
        servers.stop()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = RESULTS_DIR / "latest.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(table(result))
    print(f"\nwrote {out}")
    if not args.no_readme:
        update_readme(results_md(result))
        print(f"updated {README} and {report.write_results_json(result)}")
    return 0
