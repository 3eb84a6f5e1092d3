"""Training behaviour: determinism, the lr schedule, exact sample-weighted metrics, DLinear's decomposition."""

from pathlib import Path

import numpy as np
import pytest
import torch

from forecast.config import TrainConfig
from forecast.resolve import resolve
from forecast.layers.decomposition import SeriesDecomposition
from forecast.pipeline import TrainOptions, train
from forecast.train import lr_factor, make_loss


def test_decomposition_is_exact_with_edge_padding() -> None:
    x = torch.randn(3, 50, 4, dtype=torch.float64)
    seasonal, trend = SeriesDecomposition(25)(x)
    torch.testing.assert_close(seasonal + trend, x)
    # Near the start, the window holds 12 copies of the first step: trend[0] = (13 x[0] + x[1..12]) / 25.
    expected0 = (13 * x[:, 0] + x[:, 1:13].sum(1)) / 25
    torch.testing.assert_close(trend[:, 0], expected0)
    expected_mid = x[:, 20 - 12:20 + 13].mean(1)
    torch.testing.assert_close(trend[:, 20], expected_mid)
    with pytest.raises(ValueError):
        SeriesDecomposition(24)


def _pooled_trend(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """The reference moving average: ``avg_pool1d`` over the replicate-padded series, as DLinear's papers wrote it."""
    import torch.nn.functional as F

    pad = (kernel - 1) // 2
    return F.avg_pool1d(F.pad(x.transpose(1, 2), (pad, pad), mode="replicate"), kernel, stride=1).transpose(1, 2)


@pytest.mark.parametrize("kernel", [1, 3, 25, 49])
@pytest.mark.parametrize("shape", [(32, 336, 7), (5, 96, 1), (4, 60, 321)])
def test_the_moving_average_is_avg_pool_bit_for_bit(kernel: int, shape: tuple) -> None:
    """The shifted-view sum equals avg_pool1d over the replicate-padded series exactly (so DLinear's numbers stay
    the papers'), and an input with a gradient gets avg_pool1d's own backward."""
    from forecast.layers.decomposition import moving_average

    x = torch.randn(*shape) * 10
    ref = _pooled_trend(x, kernel)
    got = moving_average(x, kernel)
    assert torch.equal(got, ref) and got.stride() == ref.stride()  # the layout too: it picks the GEMM path after
    leaf, expected = x.clone().requires_grad_(), x.clone().requires_grad_()
    moving_average(leaf, kernel).sum().backward()
    _pooled_trend(expected, kernel).sum().backward()
    assert torch.equal(leaf.grad, expected.grad)


def test_type1_schedule_matches_the_papers() -> None:
    cfg = TrainConfig(lr=1.0, lradj="type1")
    assert [lr_factor(cfg, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    hold = TrainConfig(lradj="hold_decay", lr_hold_epochs=3, lr_decay=0.9)
    assert [round(lr_factor(hold, e), 4) for e in range(5)] == [1.0, 1.0, 1.0, 0.9, 0.81]


def test_the_logged_lr_is_the_one_each_epoch_trained_at(data_dir: Path, tmp_path: Path, capsys) -> None:
    """The epoch line and MLflow's lr history show the lr the optimizer used in that epoch (the per-epoch
    scheduler has already stepped by the end of an epoch, so reading it there would show the next one)."""
    import lightning.pytorch as pl
    from mlflow.tracking import MlflowClient

    used: dict[int, float] = {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            used.setdefault(trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"])

    uri = f"sqlite:///{tmp_path}/m.db"
    cfg = _quick_cfg(**{"train.epochs": 4, "train.patience": 10, "train.limit_train_batches": 2})
    result = train(cfg, TrainOptions(tracking_uri=uri, quiet=False, log_artifacts=False, callbacks=[Spy()]))
    assert used == {0: 0.005, 1: 0.005, 2: 0.0025, 3: 0.00125}  # type1: lr0, lr0, lr0/2, lr0/4
    history = MlflowClient(uri).get_metric_history(result.run_id, "lr")
    assert sorted((m.step, m.value) for m in history) == sorted(used.items())
    err = capsys.readouterr().err
    assert "epoch 2/4" in err and "lr 0.005" in err.split("epoch 2/4")[1].split("\n")[0]


def test_weighted_l1_loss() -> None:
    p, y = torch.zeros(1, 4, 1), torch.ones(1, 4, 1)
    got = make_loss("weighted_l1", 0.5)(p, y)
    assert got.item() == pytest.approx(np.mean([(t + 1) ** -0.5 for t in range(4)]))


def _quick_cfg(**extra):
    sets = {"train.epochs": 2, "train.limit_train_batches": 8, "data.seq_len": 96, "data.horizon": 24, **extra}
    return resolve("dlinear", "ETTh1", sets)


def test_same_seed_gives_identical_metrics(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    opts = TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False)
    a = train(_quick_cfg(), opts).metrics
    b = train(_quick_cfg(), opts).metrics
    c = train(_quick_cfg(**{"train.seed": 7}), opts).metrics
    for key in ("test_mse", "test_mae", "best_val_loss"):
        assert a[key] == b[key]
    assert a["test_mse"] != c["test_mse"]


def test_test_metrics_are_exact_over_all_windows(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The metric over batches of 256 (last one short) equals a direct computation over all windows."""
    from forecast.pipeline import build

    monkeypatch.chdir(tmp_path)
    cfg = _quick_cfg()
    res = train(cfg, TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False))
    assert res.metrics["test_windows"] == 2881 - 24
    assert res.metrics["val_windows"] == 2881 - 24  # ETTh1's 4-month val and test splits, each from L rows early
    dm, module = build(cfg, progress=False)
    # Rebuild with the same seed and training gives the same weights; instead evaluate an untrained model
    # both ways, which checks the reduction itself.
    import lightning.pytorch as pl

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.test(module, datamodule=dm, verbose=False)
    ds = dm.dataset("test")
    with torch.no_grad():
        batch = ds[list(range(len(ds)))]
        pred = module.model(batch["x"], batch.get("x_mark"), batch.get("y_mark"))
    err = pred - batch["y"]
    assert module.test_metrics["test_mse"] == pytest.approx(err.pow(2).mean().item(), rel=1e-5)
    assert module.test_metrics["test_mae"] == pytest.approx(err.abs().mean().item(), rel=1e-5)
    std = torch.as_tensor(dm.series.std, dtype=torch.float32)
    assert module.test_metrics["test_mse_orig"] == pytest.approx((err * std).pow(2).mean().item(), rel=1e-5)
    np.testing.assert_allclose(module.step_mse, err.pow(2).mean(dim=(0, 2)).numpy(), rtol=1e-5)


def test_a_long_epoch_reports_its_steps_between_epoch_lines(capsys) -> None:
    """Without a progress bar (a log file), an epoch of an hour still says where it stands, throttled, and never
    on its last batch (the epoch line follows)."""
    from types import SimpleNamespace

    from forecast.train import EpochPrinter, StepProgress

    trainer = SimpleNamespace(is_global_zero=True, num_training_batches=100, current_epoch=0, max_epochs=3)
    quiet = EpochPrinter(step_every=3600.0)
    quiet.on_train_epoch_start(trainer, None)
    for i in range(99):
        quiet.on_train_batch_end(trainer, None, None, None, i)
    assert capsys.readouterr().err == ""  # within the throttle: silent

    seen: list[StepProgress] = []
    printer = EpochPrinter(step_every=0.0, step_emit=seen.append)
    printer.on_train_epoch_start(trainer, None)
    for i in range(100):
        printer.on_train_batch_end(trainer, None, None, None, i)
    assert [s.step for s in seen] == list(range(1, 100))
    assert {(s.epoch, s.epochs, s.steps) for s in seen} == {(1, 3, 100)}

    EpochPrinter(step_every=0.0).on_train_batch_end(trainer, None, None, None, 9)
    assert "epoch 1/3: step 10/100" in capsys.readouterr().err

    info = StepProgress(epoch=1, epochs=3, step=10, steps=100, seconds=20.0)
    assert info.seconds_per_step == 2.0 and info.epoch_left == 180.0
    assert info.run_left == 180.0 + 2 * 100 * 2.0  # two more whole epochs at most
    assert info.line() == "epoch 1/3: step 10/100, 2.00 s/step, about 3 min of training left in this epoch"


def test_checkpoint_rng_state_resumes_on_the_cpu_and_keeps_a_gpu_state_for_train_start():
    """A checkpoint written on a GPU carries the device generator's state; resumed on the CPU it is set aside."""
    from forecast.train import ForecastModule

    module = ForecastModule(torch.nn.Linear(4, 4), TrainConfig(), np.zeros(4), np.ones(4))
    torch.manual_seed(7)
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert set(ckpt["forecast_rng"]) == {"torch"}  # a CPU run has no device state to save
    expected = torch.rand(3)
    ckpt["forecast_rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)  # as a GPU run would have written
    torch.manual_seed(8)
    module.on_load_checkpoint(ckpt)
    assert module._cuda_rng is not None  # kept until training starts on the module's device
    module.on_train_start()  # on the CPU: the device state is dropped, nothing raises
    assert module._cuda_rng is None
    assert torch.equal(torch.rand(3), expected)  # the CPU generator goes on where the checkpoint left it


def test_no_dataloader_worker_advice_on_a_many_core_machine(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Lightning's 'does not have many workers' advice (3 lines a run where cores > 2) is not shown."""
    import warnings

    import lightning.pytorch.trainer.connectors.data_connector as dc

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dc, "suggested_max_num_workers", lambda *a, **k: 15)  # as on a 16-core machine
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(_quick_cfg(**{"train.epochs": 1}),
              TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False))
    assert not [w for w in seen if "many workers" in str(w.message)]


@pytest.mark.parametrize("name", ["naive", "seasonal_naive"])
def test_baselines_log_like_any_model_and_their_mase_is_computed_from_the_train_split(
        name: str, data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """No fit (no parameters): validated and tested once; MSE, MAE and MASE equal a direct numpy computation over
    every test window (MASE: each variate's MAE over the seasonal naive's in-sample MAE on the train rows, m=24)."""
    from forecast.data.series import load_series

    monkeypatch.chdir(tmp_path)
    cfg = resolve(name, "ETTh1", {"data.horizon": 24, "data.seq_len": 48})
    res = train(cfg, TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False))
    assert res.n_params == 0 and res.epochs_run == 0 and res.train_seconds == 0.0
    s = load_series(cfg.data, progress=False)
    start, end = s.borders["test"]
    L, H, m = 48, 24, 24
    test = s.scaled[start:end].astype(np.float64)
    origins = np.arange(L, len(test) - H + 1)
    y = np.stack([test[o:o + H] for o in origins])  # [W, H, N]
    if name == "naive":
        pred = np.repeat(test[origins - 1][:, None, :], H, axis=1)
    else:
        pred = np.stack([test[o - m + np.arange(H) % m] for o in origins])
    err = pred - y
    assert res.metrics["test_windows"] == len(origins)
    assert res.metrics["test_mse"] == pytest.approx((err ** 2).mean(), rel=1e-6)
    assert res.metrics["test_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
    train_rows = s.scaled[:s.borders["train"][1]].astype(np.float64)
    scale = np.abs(train_rows[m:] - train_rows[:-m]).mean(axis=0)
    assert res.metrics["test_mase"] == pytest.approx((np.abs(err).mean(axis=(0, 1)) / scale).mean(), rel=1e-6)
    assert np.isfinite(res.best_val_loss)


def test_the_published_protocol_scores_the_windows_a_drop_last_loader_kept(data_dir: Path) -> None:
    """train.published_drop_last: test_mse_published is the MSE over the first floor(W / B) * B test windows (B the
    train batch size), as LTSF-Linear's old test loader evaluated; the every-window metrics are unchanged."""
    import lightning.pytorch as pl

    from forecast.pipeline import build

    cfg = resolve("dlinear", "ETTh1", {"data.seq_len": 48, "data.horizon": 24, "train.batch_size": 500})
    assert cfg.train.published_drop_last  # the LTSF-Linear configs set it
    dm, module = build(cfg, progress=False)
    module.published_windows = len(dm.dataset("test")) // 500 * 500
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.test(module, datamodule=dm, verbose=False)
    ds = dm.dataset("test")
    with torch.no_grad():
        batch = ds[list(range(len(ds)))]
        err = module.model(batch["x"]) - batch["y"]
    kept = module.published_windows
    assert kept == len(ds) // 500 * 500 and 0 < kept < len(ds)  # the last partial batch left out
    m = module.test_metrics
    assert m["test_mse_published"] == pytest.approx(err[:kept].pow(2).mean().item(), rel=1e-5)
    assert m["test_mae_published"] == pytest.approx(err[:kept].abs().mean().item(), rel=1e-5)
    assert m["test_mse"] == pytest.approx(err.pow(2).mean().item(), rel=1e-5) and m["test_windows_published"] == kept


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_the_fast_training_path_gives_the_weights_of_a_plain_loop(clip: float, data_dir: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """One epoch of DLinear through the Lightning path (shifted-view moving average, blocked Adam, the epoch's loss
    summed by the module, the quick hook-name attribute) ends with the same weights, bit for bit, as a plain PyTorch
    loop over the same batches with avg_pool1d and the default Adam; with ``train.gradient_clip`` too, as
    ``clip_grad_norm_`` before each step."""
    import copy

    import lightning.pytorch as pl
    import torch.nn.functional as F

    import forecast.layers.decomposition as decomposition
    from forecast.pipeline import build
    from forecast.train import make_trainer

    monkeypatch.chdir(tmp_path)
    cfg = _quick_cfg(**{"train.epochs": 1, "train.limit_train_batches": 12, "train.limit_val_batches": 1,
                        "train.gradient_clip": clip})
    dm, module = build(cfg, progress=False)
    start = copy.deepcopy(module.model.state_dict())
    seen: list[dict] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen.append({k: v.clone() for k, v in batch.items()})

    make_trainer(cfg.train, [Record()], quiet=True).fit(module, datamodule=dm)
    assert len(seen) == 12

    monkeypatch.setattr(decomposition, "moving_average", _pooled_trend)
    _, plain = build(cfg, progress=False)
    net = plain.model
    net.load_state_dict(start)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, foreach=False)
    for batch in seen:
        opt.zero_grad()
        F.mse_loss(net(batch["x"], batch.get("x_mark"), batch.get("y_mark")), batch["y"]).backward()
        if clip:
            assert torch.nn.utils.clip_grad_norm_(net.parameters(), clip) > clip  # the clip bites
        opt.step()
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key
    assert not torch.equal(start["backbone.seasonal.linear.weight"], net.state_dict()["backbone.seasonal.linear.weight"])


def test_bf16_mixed_on_the_cpu_runs_the_maps_in_bfloat16_and_keeps_the_metrics(data_dir: Path, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """``--precision bf16-mixed`` on the CPU: Lightning autocasts the network's matrix products to bfloat16 in the
    training steps and in the test pass (where ``benchmarks/bf16_cpu.py`` finds its speed), the weights stay
    fp32, and the test metrics move, but by less than 1% of full precision's."""
    import lightning.pytorch as pl

    monkeypatch.chdir(tmp_path)
    seen: set[tuple[str, torch.dtype]] = set()
    weights: set[torch.dtype] = set()

    class Watch(pl.Callback):
        hook = None

        def _watch(self, module, phase: str) -> None:  # noqa: ANN001
            if self.hook is not None:
                self.hook.remove()
            first = next(m for m in module.model.modules() if isinstance(m, torch.nn.Linear))
            self.hook = first.register_forward_hook(lambda _m, _i, out: seen.add((phase, out.dtype)))

        def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self._watch(pl_module, "train")

        def on_test_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self._watch(pl_module, "test")
            weights.update(p.dtype for p in pl_module.model.parameters())

    opts = TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False)
    full = train(_quick_cfg(), opts).metrics
    opts.callbacks = [Watch()]
    half = train(_quick_cfg(**{"train.precision": "bf16-mixed"}), opts).metrics
    assert seen == {("train", torch.bfloat16), ("test", torch.bfloat16)}
    assert weights == {torch.float32}
    for key in ("test_mse", "test_mae", "test_crps"):
        assert half[key] != full[key]
        assert half[key] == pytest.approx(full[key], rel=0.01), key


def test_a_bf16_true_run_scores_its_forecasts_in_float32_with_the_exact_scaler(data_dir: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """bf16-true casts the module, buffers included, and each batch to bfloat16, and makes bfloat16 the default
    dtype in each step. The test metrics are still those of its bfloat16 forecasts (against the targets as the batch
    holds them) as a float64 sum over the same forecasts gives them: the counts are float64 (the last batch's
    6,888 values had been counted as 6,880 in bfloat16), the sums at least float32, and original units use the
    scaler's float32 std (not 8.5625 for 8.56)."""
    import lightning.pytorch as pl

    monkeypatch.chdir(tmp_path)
    sums = {"sse": 0.0, "sse_orig": 0.0, "n": 0}

    class Score(pl.Callback):
        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
            with torch.no_grad(), trainer.precision_plugin.test_step_context():  # as the test step runs
                err = pl_module._predict(batch).double() - batch["y"].double()
            std = torch.as_tensor(pl_module.scale[1], dtype=torch.float64)
            sums["sse"] += err.pow(2).sum().item()
            sums["sse_orig"] += (err * std).pow(2).sum().item()
            sums["n"] += err.numel()

    opts = TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False,
                        callbacks=[Score()])
    m = train(_quick_cfg(**{"train.precision": "bf16-true"}), opts).metrics
    assert sums["n"] == m["test_windows"] * 24 * 7
    assert m["test_mse"] == pytest.approx(sums["sse"] / sums["n"], rel=1e-5)
    assert m["test_mse_orig"] == pytest.approx(sums["sse_orig"] / sums["n"], rel=1e-5)


def test_a_run_that_diverges_ends_failed_with_what_to_change(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Every validation loss NaN (a learning rate of 1e30): no weights are worth keeping, so the run stops with one
    line that names the learning rate (DivergedError, exit 2 from the CLI) and ends FAILED, with no model logged,
    instead of testing NaN weights and logging a model that cannot be loaded."""
    from mlflow.tracking import MlflowClient

    from forecast.errors import DivergedError

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(DivergedError, match=r"after 1 epoch, .* lower the learning rate \(train.lr is 1e\+30\)\.$"):
        train(_quick_cfg(**{"train.lr": 1e30}), TrainOptions(tracking_uri=uri, quiet=True))
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not MlflowClient(uri).list_artifacts(runs[0].info.run_id)


def test_blocked_adam_updates_every_weight_as_torchs_adam_does() -> None:
    """BlockedAdam (the CPU's optimizer) against torch's Adam, foreach and single-tensor: two groups at their own
    learning rates under a schedule, a weight of several blocks with a ragged end, a non-contiguous weight and a
    weight without a gradient end with the same weights and the same state dict, bit for bit; a state dict moves
    between the two (a checkpoint resumes with either); the options it does not run are refused."""
    from forecast.train.adam import BLOCK, BlockedAdam

    def weights() -> list[torch.nn.Parameter]:
        g = torch.Generator().manual_seed(0)
        shapes = [(BLOCK * 2 + 37,), (5, 7), (3,), (40, 30), (6,)]
        made = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        made[3] = torch.nn.Parameter(torch.randn(30, 40, generator=g).t())  # not contiguous
        return made

    def run(make, steps: int, state: dict | None = None) -> tuple[list[torch.Tensor], dict]:  # noqa: ANN001
        ps = weights()
        opt = make([{"params": ps[:3]}, {"params": ps[3:], "lr": 3e-3}])
        if state is not None:
            opt.load_state_dict(state)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
        g = torch.Generator().manual_seed(1)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = sum((p * torch.randn(p.shape, generator=g)).sum() + p.pow(2).sum() for p in ps[:4])
            loss.backward()
            opt.step()
            sched.step()
        return [p.detach().clone() for p in ps], opt.state_dict()

    foreach = run(lambda groups: torch.optim.Adam(groups, lr=1e-2, foreach=True), 4)
    single = run(lambda groups: torch.optim.Adam(groups, lr=1e-2, foreach=False), 4)
    blocked = run(lambda groups: BlockedAdam(groups, lr=1e-2), 4)
    start = weights()
    assert not torch.equal(blocked[0][0], start[0]) and torch.equal(blocked[0][4], start[4])  # moved; no grad: kept
    for reference in (foreach, single):
        assert all(torch.equal(a, b) for a, b in zip(reference[0], blocked[0], strict=True))
        for i, entry in reference[1]["state"].items():
            assert all(torch.equal(entry[k], blocked[1]["state"][i][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert 4 not in blocked[1]["state"]
    # A state dict written by one resumes in the other: the same weights either way.
    resumed_in_torch = run(lambda groups: torch.optim.Adam(groups, lr=1e-2, foreach=True), 2, blocked[1])
    resumed_blocked = run(lambda groups: BlockedAdam(groups, lr=1e-2), 2, foreach[1])
    assert all(torch.equal(a, b) for a, b in zip(resumed_in_torch[0], resumed_blocked[0], strict=True))
    with pytest.raises(ValueError, match="amsgrad"):
        ps = weights()
        opt = BlockedAdam(ps, lr=1e-2)
        opt.param_groups[0]["amsgrad"] = True
        ps[1].grad = torch.ones_like(ps[1])
        opt.step()
