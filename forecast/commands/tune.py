"""``forecast tune``: run or resume the study, then print the top trials and the commands that retrain the best."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from forecast.config import FLAGS
from forecast.console import console, fmt_param
from forecast.tuning import TuneOptions, run_study


def _set_value(value: Any) -> str:
    """A value as ``--set`` parses it back (YAML): ``1.0e-05``, ``true``, ``32``."""
    return yaml.safe_dump(value).splitlines()[0]


def _command(name: str, dataset: str, model: str, config: Path | None, sets: dict[str, Any],
             extra: list[str]) -> str:
    """The command line that gives ``sets``: the named flags where there is one, ``--set`` for the rest."""
    parts = ["forecast", name, "--dataset", dataset, "--model", model]
    for key, flag in FLAGS.items():
        value = sets.get(key)
        if value is not None:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    if config is not None:
        parts += ["--config", str(config)]
    for key, value in sets.items():
        if key not in FLAGS:
            parts += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(p) for p in parts + extra)


def tune(dataset: str, model: str, overrides: dict, config: Path | None, opts: TuneOptions) -> None:
    """Run or resume an Optuna study (see forecast.tuning), then print the top trials and how to retrain the best.

    Exits 130 after Ctrl-C (the running trial is FAILED, the others are kept) and 1 when every trial failed.
    """
    result = run_study(model, dataset, overrides, config, opts)
    if result.interrupted:
        print(f"interrupted: the running trial is marked FAILED; study '{result.study_name}' in {result.storage} "
              f"keeps its {result.n_total} trials ({result.n_complete_total} complete); run the same command to "
              "resume.", file=sys.stderr, flush=True)
        sys.exit(130)
    if result.trials_run and result.n_complete == 0 and result.n_pruned == 0:
        print(f"error: all {len(result.trials_run)} trials failed; first error: {result.first_error}",
              file=sys.stderr, flush=True)
        sys.exit(1)
    if opts.quiet:
        return
    out = console()
    say = functools.partial(out.print, highlight=False, markup=False, soft_wrap=True)  # commands print verbatim
    table = Table(title=f"study {result.study_name}: {result.n_total} trials ({len(result.trials_run)} now: "
                        f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed)")
    table.add_column("trial", justify="right")
    table.add_column("best val loss", justify="right")
    table.add_column("epochs", justify="right")
    keys = list(result.space) or sorted({k for t in result.top for k in t["params"]})
    for key in keys:
        table.add_column(key, justify="right")
    for t in result.top:
        table.add_row(f"#{t['number']}", f"{t['value']:.5f}", str(t["epochs"]),
                      *[fmt_param(t["params"][k]) if k in t["params"] else "" for k in keys])
    out.print(table)
    say(f"parent run  {result.parent_run_id}  (experiment '{result.experiment}', store {result.tracking_uri})")
    if result.report_artifacts:
        say(f"report      {', '.join(result.report_artifacts)} on the parent run")
    if result.best_trial is None:
        say("no completed trial yet; run the same command again to continue the study.")
        return
    common = []
    if opts.tracking_uri:
        common += ["--tracking-uri", opts.tracking_uri]
    if opts.experiment:
        common += ["--experiment", opts.experiment]
    retrain = _command("tune", dataset, model, config, overrides,
                       ["--study-name", result.study_name, "--storage", result.storage, *common,
                        "--trials", "0", "--retrain-best"])
    as_train = _command("train", dataset, model, config, {**overrides, **result.best_params}, common)
    if result.retrain is not None:
        m = result.retrain.metrics
        crps = f", test CRPS {m['test_crps']:.4f}" if "test_crps" in m else ""
        say(f"retrained best (trial #{result.best_trial}): test MSE {m['test_mse']:.4f}, test MAE "
            f"{m['test_mae']:.4f}{crps}, run id {result.retrain.run_id}")
    else:
        say(f"retrain the best (trial #{result.best_trial}, val loss {result.best_value:.5f}) and test it:")
        say(f"  {retrain}")
    say("or train it as a plain run:")
    say(f"  {as_train}")
    if opts.n_jobs > 1:  # threads share torch's random state: initial weights, shuffles and dropout interleave
        say(f"(the {opts.n_jobs} threads' trials shared torch's random state, so a retrained run's numbers differ from "
            "its trial's; workers in separate processes on one --storage repeat theirs)")
