"""One LightningModule for every forecaster: its training step, and exact evaluation over every window."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from forecast.config import TrainConfig
from forecast.conformal import crps_sums, level_name, model_crps_sums, probts_levels, put_model_crps
from forecast.models import at_least_fp32, run_batch
from forecast.train.adam import BlockedAdam
from forecast.train.objective import lr_factor, make_loss, param_groups


def _wide(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scored in at least float32: a 16-bit run's forecasts and targets, not sums rounded to 16 bits."""
    return tuple(at_least_fp32(t) for t in tensors)


class ForecastModule(pl.LightningModule):
    """Wraps any registered backbone: loss, optimizer, schedule, and sample-weighted evaluation.

    Test metrics are sums over every window, reduced once at the end: MSE/MAE on the standardized scale
    (the papers' convention), the same in original units, and the MSE of each horizon step. Under DDP every
    rank sums over its own shard of the windows and the sums are added over ranks before dividing, so the
    metrics equal the single-process ones.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, mean: np.ndarray, std: np.ndarray,
                 mase_scale: np.ndarray | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.loss_fn = make_loss(cfg.loss, cfg.loss_alpha, cfg.model_quantiles)
        self.median_index = cfg.model_quantiles.index(0.5) if cfg.model_quantiles else None  # its point forecast
        # a quantile model with ProbTS's nine levels: where they sit in its output (its test CRPS is its own)
        self.crps_index = probts_levels(cfg.model_quantiles)
        self.scale = (torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32))  # not
        # buffers, which a 16-true or bf16-true run casts (std 8.5625 for 8.56); the test pass moves them to its device
        # [N] seasonal naive's in-sample MAE on the train rows (standardized): test_mase's denominators
        self.mase_scale = None if mase_scale is None else torch.as_tensor(mase_scale, dtype=torch.float64)
        # conformal half-widths [K, H, N] at levels (forecast.conformal), set after training: the test's coverage
        self.intervals: tuple[tuple[float, ...], torch.Tensor] | None = None
        self.crps_widths: torch.Tensor | None = None  # [4, H, N] half-widths at CRPS_LEVELS: test CRPS
        # test windows a drop_last loader at the script's batch size evaluated (train.published_drop_last), or None
        self.published_windows: int | None = None
        # Set by the pipeline (one process, forecasts small enough): each validation pass keeps its point forecasts in
        # val_forecasts, and BestWeights holds the best epoch's, so conformal calibration needs no pass of its own.
        self.keep_val_forecasts = False
        self.val_forecasts: list[torch.Tensor] | None = None
        self._seen = 0
        self.step_intervals: dict[str, np.ndarray] = {}  # per horizon step: coverage_80, width_80, width_80_orig, ...
        self._sums: dict[str, torch.Tensor] = {}
        self.test_metrics: dict[str, float] = {}
        self.step_mse: np.ndarray | None = None
        self.epoch_lr: float | None = None  # the lr the current epoch trains at
        self._train_sum: torch.Tensor | None = None  # Σ loss·B and Σ B of the epoch's steps (one process)
        self._train_n: torch.Tensor | None = None
        self._cuda_rng: torch.Tensor | None = None  # a resumed GPU run's generator state, set at train start
        # torch.compile'd forward (train.compile); kept out of the module tree so the state dict is unchanged.
        object.__setattr__(self, "_compiled", torch.compile(model) if cfg.compile else None)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the running hook here about 24 times a train step; a plain attribute skips nn.Module's checks
        # for parameters, modules and buffers (benchmarks/results/step_overhead_dlinear.md)
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        return self.model(x, x_mark, y_mark, future)

    def _predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return run_batch(self._compiled if self._compiled is not None else self.model, batch)

    def on_train_epoch_start(self) -> None:
        # Read here: by the end of the epoch the per-epoch scheduler has already stepped to the next epoch's lr.
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self._train_sum = torch.zeros((), device=self.device)
        self._train_n = torch.zeros((), dtype=torch.long, device=self.device)

    def epoch_train_loss(self) -> float | None:
        """The epoch's mean train loss in one process, or None under DDP (then it is the logged ``train_loss``).

        Summed here as Lightning's on_epoch mean sums it (``Σ loss·B`` in float32 over ``Σ B``), to the same bits,
        rather than through ``self.log`` every step, which costs about 15% of a DLinear step
        (``benchmarks/results/step_overhead_dlinear.md``)."""
        if self.trainer.world_size > 1 or self._train_n is None or not int(self._train_n):
            return None
        return float(self._train_sum / self._train_n)

    def on_train_epoch_end(self) -> None:
        loss = self.epoch_train_loss()
        if loss is not None:  # for the progress bar and anything reading callback_metrics after the callbacks
            self.log("train_loss", loss, prog_bar=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        k = self.cfg.partial_variates
        if 0 < k < batch["x"].shape[-1] and batch["y"].shape[-1] == batch["x"].shape[-1]:  # M: every column a target
            # Partial-variate training (iTransformer): a fresh random subset of k variates per batch.
            keep = torch.randperm(batch["x"].shape[-1], device=batch["x"].device)[:k]
            batch = {**batch, "x": batch["x"][..., keep], "y": batch["y"][..., keep]}
        loss = self.loss_fn(self._predict(batch), batch["y"])
        n = batch["x"].shape[0]
        if self.trainer.world_size > 1:  # the mean over ranks (every rank takes the same number of batches)
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        else:
            self._train_sum = self._train_sum + loss.detach() * n
            self._train_n = self._train_n + n
        return loss

    # -- evaluation: exact sums over all windows ------------------------------------------------------
    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self._sums[key] = self._sums[key] + value if key in self._sums else value

    def _count(self, key: str, n: int, device: torch.device) -> None:
        # float64 from the start: a bf16-true run's default dtype would round 6888 to 6880
        self._accumulate(key, torch.tensor(float(n), dtype=torch.float64, device=device))

    def on_validation_epoch_start(self) -> None:
        self._sums = {}
        self.val_forecasts = [] if self.keep_val_forecasts else None  # a new list: BestWeights may hold the last one

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self._predict(batch)
        n = batch["x"].shape[0]
        if self.val_forecasts is not None:  # a reference to a forecast made anyway, copied only out of a bigger output
            point = self.point(pred.detach())  # (a quantile model's median, a model's target columns)
            self.val_forecasts.append(point.clone() if point.untyped_storage().nbytes() > point.nbytes else point)
        self._accumulate("val_loss", self.loss_fn(*_wide(pred, batch["y"])) * n)
        self._count("val_n", n, pred.device)

    def _reduced_sums(self) -> dict[str, torch.Tensor]:
        """This epoch's sums, added over all ranks under DDP (every rank has the same keys and shapes)."""
        if self.trainer.world_size == 1:
            return self._sums
        return {k: self.trainer.strategy.reduce(v.clone(), reduce_op="sum") for k, v in sorted(self._sums.items())}

    def on_validation_epoch_end(self) -> None:
        sums = self._reduced_sums()
        # The same value on every rank; sync_dist only keeps Lightning from warning about it.
        self.log("val_loss", (sums["val_loss"] / sums["val_n"]).float(), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._sums = {}
        self._seen = 0
        self.mean, self.std = (t.to(self.device) for t in self.scale)

    def point(self, pred: torch.Tensor) -> torch.Tensor:
        """``[B, H, N]``: the forecast itself, or a quantile model's median."""
        return pred if self.median_index is None else pred[..., self.median_index]

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        full, y = _wide(self._predict(batch), batch["y"])
        if self.median_index is not None:
            self._accumulate("pinball", self.loss_fn(full, y) * y.numel())
        if self.crps_index is not None:
            crps, crps_orig = model_crps_sums(full[..., self.crps_index], y, self.mean, self.std)
            self._accumulate("crps_model", crps)
            self._accumulate("crps_model_orig", crps_orig)
        pred = self.point(full)  # [B, H, N]
        if self.published_windows is not None:  # the papers' subset: the first windows, in order
            keep = max(0, min(pred.shape[0], self.published_windows - self._seen))
            self._seen += pred.shape[0]
            part = pred[:keep] - y[:keep]
            self._accumulate("sse_pub", part.pow(2).sum())
            self._accumulate("sae_pub", part.abs().sum())
            self._count("n_pub", part.numel(), part.device)
        err = pred - y
        err_orig = err * self.std  # the same error in original units (the mean cancels)
        self._accumulate("sse", err.pow(2).sum())
        self._accumulate("sae", err.abs().sum())
        self._accumulate("sse_orig", err_orig.pow(2).sum())
        self._accumulate("sae_orig", err_orig.abs().sum())
        self._accumulate("sse_step", err.pow(2).sum(dim=(0, 2)))  # [H]
        self._accumulate("sae_var", err.abs().sum(dim=(0, 1)))  # [N]
        if self.intervals is not None:
            levels, widths = self.intervals
            inside = err.abs().unsqueeze(0) <= widths.to(err.device).unsqueeze(1)  # [K, B, H, N]
            self._accumulate("covered_step", inside.sum(dim=(1, 3)))  # [K, H]
        if self.crps_widths is not None:
            crps, crps_orig = crps_sums(pred, y, self.crps_widths, self.mean, self.std)
            self._accumulate("crps", crps)
            self._accumulate("crps_orig", crps_orig)
        self._count("n", err.numel(), err.device)
        self._count("windows", err.shape[0], err.device)

    def on_test_epoch_end(self) -> None:
        s = self._reduced_sums()
        n = s["n"]
        per_step_n = n / s["sse_step"].numel()
        self.test_metrics = {
            "test_mse": float(s["sse"] / n),
            "test_mae": float(s["sae"] / n),
            "test_mse_orig": float(s["sse_orig"] / n),
            "test_mae_orig": float(s["sae_orig"] / n),
            "test_windows": float(s["windows"]),
        }
        if self.intervals is not None:
            levels, widths = self.intervals
            covered = s["covered_step"] / (n / s["covered_step"].shape[1])  # [K, H]: the share inside, per step
            for k, level in enumerate(levels):
                name = level_name(level)
                width = 2 * widths[k].double()  # [H, N]: the interval's width at each step and variate
                width_orig = width * self.std.double().cpu()
                self.test_metrics[f"test_coverage_{name}"] = float(covered[k].mean())
                self.test_metrics[f"test_width_{name}"] = float(width.mean())
                self.test_metrics[f"test_width_{name}_orig"] = float(width_orig.mean())
                self.step_intervals.update({f"coverage_{name}": covered[k].cpu().numpy(),
                                            f"width_{name}": width.mean(-1).numpy(),
                                            f"width_{name}_orig": width_orig.mean(-1).numpy()})
        if self.published_windows is not None and float(s["n_pub"]) > 0:
            self.test_metrics["test_mse_published"] = float(s["sse_pub"] / s["n_pub"])
            self.test_metrics["test_mae_published"] = float(s["sae_pub"] / s["n_pub"])
            self.test_metrics["test_windows_published"] = float(self.published_windows)
        if self.median_index is not None:  # the quantile model's own mean pinball loss over every test value
            self.test_metrics["test_pinball"] = float(s["pinball"] / n)
        if self.crps_widths is not None:  # ProbTS's CRPS, averaged over the windows (forecast.conformal)
            self.test_metrics["test_crps"] = float(s["crps"] / s["windows"])
            self.test_metrics["test_crps_orig"] = float(s["crps_orig"] / s["windows"])
        if self.crps_index is not None:  # of the model's own nine quantiles; the conformal one keeps a name of its own
            put_model_crps(self.test_metrics, float(s["crps_model"] / s["windows"]),
                           float(s["crps_model_orig"] / s["windows"]), "test_")
        if self.mase_scale is not None:  # MASE: each variate's test MAE over its scale, averaged over the variates
            ratio = (s["sae_var"] / (n / s["sae_var"].numel())).cpu() / self.mase_scale
            if torch.isfinite(ratio).any():
                self.test_metrics["test_mase"] = float(ratio[torch.isfinite(ratio)].mean())
        self.step_mse = (s["sse_step"] / per_step_n).cpu().numpy()
        for key, value in self.test_metrics.items():
            self.log(key, value, sync_dist=True)  # the same value on every rank

    # -- resuming (EpochCheckpoint): the global RNG drives dropout and partial-variate draws --------------
    # On a GPU dropout draws from the device's generator, so its state travels too. Lightning restores a
    # single-device run before it moves the module to the GPU, so that state is set when training starts (a
    # run resumed on another kind of device goes on with the CPU state alone).
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["forecast_rng"] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            checkpoint["forecast_rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("forecast_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            self._cuda_rng = rng.get("cuda")

    def on_train_start(self) -> None:
        state, self._cuda_rng = self._cuda_rng, None
        if state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)

    def configure_optimizers(self) -> Any:
        # foreach on CUDA: one multi-tensor op per update term; on the CPU its arithmetic block by block (the same bits)
        groups, blocked = param_groups(self, self.cfg), self.device.type == "cpu"
        opt = BlockedAdam(groups, lr=self.cfg.lr) if blocked else torch.optim.Adam(groups, lr=self.cfg.lr, foreach=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(self.cfg, epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
