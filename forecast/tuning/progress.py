"""Tuning progress on the terminal: a bar of trials, or one line per trial without a terminal."""

from __future__ import annotations

import sys
import threading
from typing import IO

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forecast.console import fmt_param


class TrialProgress:
    """Optuna callback: a rich progress bar of trials on a terminal, one line per trial otherwise, or nothing."""

    def __init__(self, total: int | None, quiet: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.mode = "off" if quiet else ("bar" if self.stream.isatty() else "lines")
        self.total = total
        self.done = self.complete = self.pruned = self.failed = 0
        self._lock = threading.Lock()
        self._progress = None
        self._task = None

    def __enter__(self) -> TrialProgress:
        if self.mode == "bar":

            self._progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("trials", total=self.total, status="best -  pruned 0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self.done += 1
            if trial.state == TrialState.COMPLETE:
                self.complete += 1
            elif trial.state == TrialState.PRUNED:
                self.pruned += 1
            else:
                self.failed += 1
            best = _best(study)
            best_text = f"best {best.value:.5g} (#{best.number})" if best else "best -"
            counts = f"pruned {self.pruned}" + (f"  failed {self.failed}" if self.failed else "")
            if self.mode == "bar":
                self._progress.update(self._task, advance=1, status=f"{best_text}  {counts}")
                if trial.state == TrialState.FAIL:  # the error stays on screen above the bar
                    self._progress.console.print(trial_line(trial, self.done, self.total), markup=False)
            elif self.mode == "lines":
                print(trial_line(trial, self.done, self.total) + f"  {best_text}  {counts}", file=self.stream,
                      flush=True)


def trial_line(trial: FrozenTrial, done: int, total: int | None) -> str:
    """``trial 3/20 #7 PRUNED at epoch 2  val_loss 0.5123  4.1 s  train.lr=0.001 ...``."""
    state = trial.state.name
    parts = [f"trial {done}/{total if total is not None else '?'} #{trial.number} {state}"]
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        parts[0] += f" at epoch {max(trial.intermediate_values) + 1}"
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        parts.append(f"val_loss {trial.value:.5g}")
    elif trial.intermediate_values:
        parts.append(f"val_loss {trial.intermediate_values[max(trial.intermediate_values)]:.5g}")
    if trial.duration is not None:
        parts.append(f"{trial.duration.total_seconds():.1f} s")
    parts.append(" ".join(f"{k}={fmt_param(v)}" for k, v in trial.params.items()))
    if trial.state == TrialState.FAIL and trial.user_attrs.get("error"):
        parts.append(f"({trial.user_attrs['error'][:120]})")
    return "  ".join(p for p in parts if p)


def _best(study: optuna.Study) -> FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: t.value) if done else None
