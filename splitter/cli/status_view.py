"""The live table of `splitter status --watch` on a terminal (rich): the view an operator keeps open.

Owns: `StatusView` (per service: state, lag in seconds and bytes, rows/s, a sparkline of the last
`history` lag samples, cutover state, open dead letters; the source line above it; under it each
service's last error, the components stopped or degraded, the verdict and the cutover/ownership
sections), `sparkline`, and `watch_live`, which redraws it in place with rich.live.  Without a terminal
the command prints splitter.ops.status_render's plain table (or JSON) per refresh instead.
Must not: read anything or decide anything (the picture comes from splitter.ops.status, the exit code
from splitter.ops.status_verdict), or print a DSN.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from splitter.ops.status import Status
from splitter.ops.status_components import human_bytes, human_seconds
from splitter.ops.status_ownership import render_ownership
from splitter.ops.status_render import source_line, verdict_line

SPARK = "▁▂▃▄▅▆▇█"
#: Lag samples a sparkline shows (one per refresh).
HISTORY = 16
# A sparkline's top is at least this many seconds, so a lag of a second or two does not fill it.
_SPARK_FLOOR = 5.0
_STATE_STYLE = {"streaming": "green", "held": "yellow", "holding": "yellow", "not started": "yellow",
                "stalled": "red", "stopped": "bold red", "unreachable": "bold red", "misconfigured": "bold red"}
_VERDICT_STYLE = {0: "green", 1: "yellow", 3: "bold red"}


def sparkline(values: Iterable[float | None], floor: float = _SPARK_FLOOR) -> str:
    """One block per value, scaled to max(values, floor); an unknown value is a blank."""
    seen = list(values)
    top = max([floor, *(v for v in seen if v is not None)])
    out = []
    for v in seen:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))])
    return "".join(out)


def _state_style(state: str) -> str:
    for word, style in _STATE_STYLE.items():
        if word in state:
            return style
    return "cyan"  # a cutover state (fenced, switched, ...)


class StatusView:
    """Renders one picture per refresh; keeps each service's recent lag for its sparkline."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self._lags: dict[str, deque[float | None]] = {}

    def add(self, status: Status) -> None:
        for st in status.services:
            self._lags.setdefault(st.service, deque(maxlen=self.history)).append(st.lag_seconds)

    def table(self, status: Status) -> Table:
        # No vertical rules and short headings: the table fits an 80-column terminal.
        table = Table(title=f"splitter status  {status.taken_at}", title_justify="left", expand=False,
                      box=box.SIMPLE_HEAD)
        for name, justify in (("SERVICE", "left"), ("STATE", "left"), ("LAG", "right"), ("BYTES", "right"),
                              ("ROWS/S", "right"), ("LAG TREND", "left"), ("CUTOVER", "left"), ("DLQ", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for st in status.services:
            table.add_row(
                st.service, Text(st.state, style=_state_style(st.state)), human_seconds(st.lag_seconds),
                human_bytes(st.lag_bytes), "-" if st.rows_per_second is None else f"{st.rows_per_second:g}",
                sparkline(self._lags.get(st.service, ())), st.cutover_state or "-",
                "-" if st.dead_letters is None else Text(str(st.dead_letters),
                                                         style="bold red" if st.dead_letters else ""))
        return table

    @staticmethod
    def errors(status: Status) -> list[Text]:
        """The last error of each service that has one, under the table (a column would squeeze the rest)."""
        return [Text(f"{st.service}: {st.last_error}", style=_state_style(st.state))
                for st in status.services if st.last_error]

    def render(self, status: Status) -> RenderableType:
        source = Text(source_line(status.source), style="" if status.source.reachable else "bold red")
        parts: list[RenderableType] = [source, self.table(status), *self.errors(status)]
        parts += [Text(f"{c.component} {c.summary()}", style="bold red")
                  for c in status.stopped if c.component != "worker"]
        parts += [Text(f"{c.component} {c.summary()}", style="yellow") for c in status.degraded]
        if status.verdict is not None:
            parts.append(Text(verdict_line(status.verdict), style=_VERDICT_STYLE.get(status.verdict.exit_code, "")))
        if status.cutover_text:
            parts.append(Text("\n" + status.cutover_text))
        if status.ownership:
            parts.append(Text("\n" + render_ownership(status.ownership)))
        return Group(*parts)


def watch_live(stream: TextIO, refreshes: Iterable[Status], on_refresh: Callable[[Status], None]) -> None:
    """Draw each picture of `refreshes` in place on the terminal `stream` until they end (or Ctrl-C)."""
    view = StatusView()
    console = Console(file=stream)
    live: Live | None = None
    try:
        for status in refreshes:
            on_refresh(status)
            view.add(status)
            if live is None:
                live = Live(view.render(status), console=console, auto_refresh=False, transient=False)
                live.start(refresh=True)
            else:
                live.update(view.render(status), refresh=True)
    finally:
        if live is not None:
            live.stop()


__all__ = ["HISTORY", "SPARK", "StatusView", "sparkline", "watch_live"]
