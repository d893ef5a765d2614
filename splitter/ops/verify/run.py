"""Running a verify: choosing the tables, then comparing them one by one.

Owns: `verify` (check the options, choose the routes, take the snapshots (consistently through
`snapshot`, or as they are), compare each table's chunks, merge the rows of differing chunks, record
progress, close every session) and `verify_quiesced`, and choosing the routes (`select_routes`; the
target-only columns of a service whose writes have moved are not compared: `ownership.moved_view`).
Must not: import a database driver (the sessions are `connectors.pg.verify_source` / `verify_target`'s),
format the report (`report` does), or write to the source.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from connectors.pg.state.cutover import completed_services, services_needing_reverse
from connectors.pg.verify_source import SourceSession
from connectors.pg.verify_sql import TablePlan
from connectors.pg.verify_target import ProgressRecorder, TargetSession
from splitter.core.errors import ConfigurationError
from splitter.core.progress import ProgressSink
from splitter.ops.verify.merge import merge_rows
from splitter.ops.verify.progress import Tracker
from splitter.ops.verify.report import TableReport, VerifyReport
from splitter.ops.verify.snapshot import consistent_snapshots
from splitter.pipeline.config import Settings
from splitter.topology.model import Route
from splitter.topology.ownership import moved_view

DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_SAMPLE = 10
DEFAULT_TIMEOUT = 60.0


def select_routes(settings: Settings, services: Sequence[str] | None,
                  tables: Sequence[str] | None) -> list[Route]:
    """The routes to compare: all, or those of `services`, narrowed to `tables`.

    A table is named as its service database knows it: `posts`, `post.posts`, or `service.table`
    (`interaction.follows`).
    """
    topology = settings.topology
    chosen = [topology.service(s) for s in services] if services else list(topology.services)
    names = {s.name for s in chosen}
    routes = [r for r in topology.routes() if r.service.name in names]
    if not tables:
        return routes
    out: list[Route] = []
    for wanted in tables:
        hits = [r for r in routes
                if wanted in (r.table.name, r.target_table, f"{r.target_schema}.{r.target_table}",
                              f"{r.service.name}.{r.table.name}")]
        if not hits:
            known = ", ".join(f"{r.service.name}.{r.table.name}" for r in routes)
            raise ConfigurationError(f"--table {wanted!r} matches no table of the chosen services (known: {known})")
        out += [r for r in hits if r not in out]
    return out


def verify(settings: Settings, *, services: Sequence[str] | None = None, tables: Sequence[str] | None = None,
           sample: int = DEFAULT_SAMPLE, chunk_rows: int = DEFAULT_CHUNK_ROWS, timeout: float = DEFAULT_TIMEOUT,
           progress: ProgressSink | None = None, consistent: bool = True) -> VerifyReport:
    """Compare the chosen service tables with the topology's projection of their source tables."""
    if chunk_rows < 1:
        raise ConfigurationError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if sample < 0:
        raise ConfigurationError(f"sample must not be negative, got {sample}")
    started = time.monotonic()
    moved = (services_needing_reverse(settings.source_dsn, [s.name for s in settings.topology.services])
             | completed_services(settings.source_dsn))
    if moved:
        settings = dataclasses.replace(settings, topology=moved_view(settings.topology, moved))
    routes = select_routes(settings, services, tables)
    by_service: dict[str, list[Route]] = {}
    for route in routes:
        by_service.setdefault(route.service.name, []).append(route)
    report = VerifyReport([], consistent)

    if consistent:
        source, targets = consistent_snapshots(settings, by_service, timeout, report)
    else:
        source = SourceSession(settings.source_dsn, None)
        targets = {}
        try:
            for service in by_service:
                targets[service] = TargetSession(settings.target_dsn(service), service)
                targets[service].begin()
        except BaseException:
            for target in targets.values():
                target.close()
            source.close()
            raise
    recorder: ProgressRecorder | None = None
    try:
        recorder = ProgressRecorder({service: settings.target_dsn(service) for service in by_service},
                                    {service: len(service_routes) for service, service_routes in by_service.items()})
        plans = []
        for route in routes:
            target = targets[route.service.name]
            plans.append((source.plan(route, target.columns(route), chunk_rows), target))
        tracker = Tracker(progress, [source.estimate_rows(plan.route) for plan, _ in plans], chunk_rows)
        for i, (plan, target) in enumerate(plans):
            table_started = time.monotonic()
            route = plan.route
            name = f"{route.target_schema}.{route.target_table}"
            table_report = TableReport(route.service.name, name, f"{route.source_schema}.{route.source_table}",
                                       route.table.key)
            tracker.start(i, name)
            summary = target.compare_chunks(plan, source, tracker.hashed)
            table_report.source_rows = summary.source_rows
            table_report.target_rows = summary.target_rows
            table_report.chunks = summary.chunks
            table_report.chunks_differing = len(summary.differing)
            if summary.differing:
                _diff_rows(table_report, plan, source, target, summary.differing, sample)
            target.finish_table()
            table_report.seconds = time.monotonic() - table_started
            report.tables.append(table_report)
            tracker.finish()
            recorder.table_done(route.service.name, not table_report.ok)
    finally:
        if recorder is not None:
            recorder.close()
        for target in targets.values():
            target.close()
        source.close()
    report.seconds = time.monotonic() - started
    return report


def _diff_rows(report: TableReport, plan: TablePlan, source: SourceSession, target: TargetSession,
               differing: list[int], sample: int) -> None:
    merge_rows(report, plan.column_names, plan.key_index, source.rows(plan, differing),
               target.rows(plan, differing), sample)


def verify_quiesced(settings: Settings, **kwargs: Any) -> VerifyReport:
    """`verify` without the snapshot and the hold: for a source known idle and workers caught up."""
    return verify(settings, consistent=False, **kwargs)
