"""Benchmark progress: cells done and left with an ETA, and the running cell's epochs and steps."""

from __future__ import annotations

import statistics
import sys
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forecast.benchmark.grid import Cell
from forecast.benchmark.results import duration
from forecast.train import StepProgress


class GridProgress:
    """Cells done and left with an ETA: a rich bar on a terminal, one line per cell otherwise, or nothing.

    The ETA is the mean wall time of the cells run so far in this invocation times the cells left. Within the
    running cell: its epochs and, every ``step_every`` seconds, the step, the rate and the time left at most.
    """

    def __init__(self, cells: list[Cell], quiet: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.mode = "off" if quiet else ("bar" if self.stream.isatty() else "lines")
        self.total = len(cells)
        self.todo = sum(c.status == "pending" for c in cells)
        self.done = self.total - self.todo
        self.ran: list[float] = []
        self._progress = None
        self._task = None
        self._cell_left: float | None = None  # the running cell's time left at most, from its step rate

    def eta(self) -> str:
        left = self.todo - len(self.ran)
        if left <= 0:
            return "ETA 0s"
        if left == 1 and self._cell_left is not None:  # the last cell, from its own rate (its batches only)
            return f"ETA ≤{duration(self._cell_left)} training"
        if not self.ran:
            return "ETA -"
        return f"ETA {duration(statistics.fmean(self.ran) * left)}"

    def __enter__(self) -> GridProgress:
        if self.mode == "bar":
            self._progress = Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
                                      TextColumn("{task.description}"), console=Console(file=self.stream))
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total, completed=self.done, eta=self.eta())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def skipped(self, cells: list[Cell]) -> None:
        """Say which cells are skipped (already finished), before the first one runs."""
        if not cells or self.mode == "off":
            return
        text = f"{len(cells)} of {self.total} cells already finished (same config hash); skipping them"
        if self.mode == "bar":
            self._progress.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, cell: Cell, resume_after: int | None = None) -> None:
        """``resume_after``: the cell goes on from its checkpoint after that many epochs."""
        verb = "running" if resume_after is None else f"resuming after epoch {resume_after}:"
        self._cell_left = None
        if self.mode == "bar":
            self._progress.update(self._task, description=f"{verb} {cell.label}")
        elif self.mode == "lines":  # a log file shows what is running, not only what finished
            print(f"{verb} cell {self.done + 1}/{self.total} {cell.label}  {self.eta()}", file=self.stream, flush=True)

    def epoch(self, cell: Cell, line: str) -> None:
        """A finished training epoch of the running cell (from training.EpochPrinter)."""
        if self.mode == "bar":  # the bar has room for the epoch and the val loss only
            short = "  ".join(p for p in line.split("  ") if p.startswith(("epoch", "val_loss")))
            self._progress.update(self._task, description=f"running {cell.label}: {short}")
        elif self.mode == "lines":
            print(f"  {line}", file=self.stream, flush=True)

    def step(self, cell: Cell, info: StepProgress) -> None:
        """Where the running cell's epoch stands (at most one every ``step_every`` s)."""
        self._cell_left = info.run_left
        left = duration(info.run_left)
        if self.mode == "bar":
            where = f"epoch {info.epoch}/{info.epochs} step {info.step}/{info.steps}, ≤{left} training left"
            self._progress.update(self._task, eta=self.eta(), description=f"running {cell.label}: {where}")
        elif self.mode == "lines":
            print(f"  {info.line()}, at most {left} of training left in this cell (then validation and test)",
                  file=self.stream, flush=True)

    @property
    def step_every(self) -> float | None:
        """Seconds between in-epoch reports: every second on the bar, every 5 minutes in a log, none when quiet."""
        return {"bar": 1.0, "lines": 300.0}.get(self.mode)

    def finish(self, cell: Cell) -> None:
        self._cell_left = None
        self.done += 1
        self.ran.append(cell.seconds)
        line = f"cell {self.done}/{self.total} {cell.label}: "
        if cell.status == "done":
            line += (f"test MSE {cell.metrics['test_mse']:.4f} MAE {cell.metrics['test_mae']:.4f}  "
                     f"{cell.seconds:.1f} s")
        else:
            line += f"FAILED after {cell.seconds:.1f} s ({cell.error})"
        if self.mode == "bar":
            self._progress.update(self._task, advance=1, eta=self.eta(), description="")
            self._progress.console.print(line, markup=False)
        elif self.mode == "lines":
            print(f"{line}  {self.eta()}", file=self.stream, flush=True)
