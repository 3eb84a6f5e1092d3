"""``forecast benchmark`` and ``forecast dashboard``: run the grid or build the page, then print the results and
where they are."""

from __future__ import annotations

import sys
from pathlib import Path

from rich import box
from rich.table import Table

from forecast.benchmark.grid import BenchmarkOptions
from forecast.benchmark.results import (
    COMPACT_HEADER,
    FULL_WIDTH,
    TERMINAL_HEADER,
    compact_cells,
    duration,
    terminal_cells,
    write_markdown,
)
from forecast.benchmark.runner import run
from forecast.console import console
from forecast.dashboard import build
from forecast.errors import writable_folder


def benchmark(opts: BenchmarkOptions) -> None:
    """``forecast benchmark``: run the grid, print the result table, exit 130 if interrupted, 1 if a cell failed."""
    if opts.markdown is not None:
        writable_folder(opts.markdown.parent, "--markdown")
    result = run(opts)
    if opts.markdown is not None:
        write_markdown(opts.markdown, result, ["forecast", *sys.argv[1:]])
    failed = [c for c in result.cells if c.status == "failed"]
    if not opts.quiet:
        out = console()
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"benchmark {result.name}: {len(result.rows)} results "
                            f"({result.count('done')} cells run now, {result.count('skipped')} skipped as finished"
                            + (f", {len(failed)} failed" if failed else "") + ")")
        full = out.width >= FULL_WIDTH  # a narrow terminal gets the main columns, never cut values
        for col in TERMINAL_HEADER if full else COMPACT_HEADER:
            table.add_column(col, justify="left" if col in ("dataset", "model") else "right", no_wrap=True)
        for r in result.rows:
            table.add_row(*(terminal_cells(r) if full else compact_cells(r)))
        out.print(table)
        if not full:
            out.print(f"(all columns: a terminal of {FULL_WIDTH}+ columns, --markdown FILE, or `forecast dashboard`)")
        out.print(f"parent run  {result.parent_run_id}  (experiment '{result.experiment}', store "
                  f"{result.tracking_uri}); wall time {duration(result.wall_seconds)}")
        out.print(f"dashboard   forecast dashboard --name {result.name}"
                  + (f" --tracking-uri {opts.tracking_uri}" if opts.tracking_uri else ""), soft_wrap=True)
    if result.collected and result.pending() and not opts.quiet:
        left = result.pending()
        print(f"--collect: {len(left)} of {len(result.cells)} cells not run yet: "
              f"{', '.join(c.pending_label for c in left)} (the same command without --collect runs them).",
              file=sys.stderr, flush=True)
        if result.other_settings:  # e.g. the cells were run with a --set that this command lacks
            ran = "; ".join(result.their_settings[:3]) or "?"
            print(f"--collect: benchmark '{result.name}' has {result.other_settings} finished cells run with other "
                  f"settings ({ran}); give the --set, --config and --data-dir they were run with to show them.",
                  file=sys.stderr, flush=True)
    if result.interrupted:
        left = sum(c.status == "pending" for c in result.cells)
        print(f"interrupted: the running cell's run is marked KILLED; {left} cells left (run the same command "
              "to resume).", file=sys.stderr, flush=True)
        sys.exit(130)
    if failed:
        print(f"error: {len(failed)} of {len(result.cells)} cells failed; first: {failed[0].label}: "
              f"{failed[0].error}", file=sys.stderr, flush=True)
        sys.exit(1)


def dashboard(tracking_uri: str | None, name: str | None, output: Path, ui_url: str | None, quiet: bool) -> None:
    """``forecast dashboard``: build the page and say where it is."""
    result = build(tracking_uri, name, output, ui_url)
    if quiet:
        return
    size = result.html.stat().st_size / 1e6
    print(f"wrote {result.html} ({size:.1f} MB, {len(result.rows)} results from {result.n_runs} runs), "
          f"{result.markdown} and {result.csv}")
    print(f"open it: file://{result.html.resolve()}")
