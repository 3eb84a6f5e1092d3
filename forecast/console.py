"""The terminal: one console for every command, and the small tables they print.

rich is imported when something is printed, not before: a quiet ``forecast predict`` never loads it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def console(stderr: bool = False) -> Console:
    """A console on stdout (or ``stderr``); when it is not a terminal, wide enough that run ids are never cut."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=160)


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def fmt_param(value: Any) -> str:
    """A hyperparameter: four significant digits (a covariate lr of 5.2e-07, which ``fmt`` shows as 0.0000)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metric_table(rows: list[tuple[str, Any, Any]], title: str | None = None) -> Table:
    """``metric | standardized | original units``: the papers' scale beside the data's own."""
    from rich.table import Table

    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("standardized", justify="right")
    table.add_column("original units", justify="right")
    for name, scaled, orig in rows:
        table.add_row(name, fmt(scaled), fmt(orig))
    return table


def frame_table(frame: Any, title: str, max_rows: int = 24, max_cols: int = 9) -> Table:
    """A small rich table of a polars frame: the first and last rows, the first and last columns."""
    from rich.table import Table

    cols = frame.columns if len(frame.columns) <= max_cols else [*frame.columns[: max_cols - 1], frame.columns[-1]]
    table = Table(title=title + ("" if len(cols) == len(frame.columns) else
                                 f" ({len(frame.columns) - len(cols)} columns not shown)"))
    for c in cols:
        table.add_column(c, justify="left" if frame[c].dtype.is_temporal() or c == "variable" else "right")
    n = frame.height
    rows = list(range(n)) if n <= max_rows else [*range(max_rows // 2), -1, *range(n - max_rows // 2, n)]
    for i in rows:
        if i < 0:
            table.add_row(*("..." for _ in cols))
            continue
        table.add_row(*(_cell(frame[c][i]) for c in cols))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
