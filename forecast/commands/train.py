"""``forecast train``: run it, then print what happened and where the results are."""

from __future__ import annotations

from pathlib import Path

from forecast.console import console, metric_table
from forecast.inference.serving import check_alias, register as register_model
from forecast.pipeline import TrainOptions, train as run_train
from forecast.resolve import resolve


def train(dataset: str, model: str, overrides: dict, config: Path | None, tracking_uri: str | None,
          experiment: str | None, quiet: bool, register: str | None = None, alias: str = "champion") -> None:
    """``forecast train``: resolve the config, train, register if asked, then print the test metrics and where the
    run is."""
    cfg = resolve(model, dataset, overrides, config)
    if register is not None:
        check_alias(alias)  # before any training is spent
    result = run_train(cfg, TrainOptions(tracking_uri=tracking_uri, quiet=quiet, experiment=experiment))
    if not result.is_global_zero:  # another DDP rank: rank 0 records, registers and reports
        return
    version = None
    if register is not None:
        version = register_model(result.tracking_uri, result.run_id, register, alias)
    if quiet:
        return
    m = result.metrics
    table = metric_table([("test MSE", m["test_mse"], m["test_mse_orig"]),
                          ("test MAE", m["test_mae"], m["test_mae_orig"]),
                          ("best val loss", result.best_val_loss, "")],
                         title=f"{result.run_name}: {int(m.get('test_windows', 0)):,} test windows")
    out = console()
    out.print(table)
    out.print(f"epochs {result.epochs_run} (best {result.best_epoch + 1}), {result.train_seconds:.1f} s, "
                  f"{result.n_params:,} parameters")
    out.print(f"run id  {result.run_id}")
    out.print(f"store   {result.tracking_uri}")
    where = (f"{result.tracking_uri.rstrip('/')}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
             if result.tracking_uri.startswith(("http://", "https://"))
             else f"`forecast ui` then experiment '{experiment or dataset}'")
    out.print(f"open it {where}, "
              f"or predict with `forecast predict --model runs:/{result.run_id}/model --input history.csv`")
    if version is not None:
        out.print(f"model   registered as '{register}' version {version}, alias @{alias}: "
                  f"`forecast predict --model models:/{register}@{alias} --input history.csv`")
