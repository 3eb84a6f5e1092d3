"""Shared bits of the benchmark scripts: environment metadata and result files in benchmarks/results/."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import lightning
    import mlflow
    import numpy
    import torch

    import forecast

    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cpus, "
                   f"torch threads {torch.get_num_threads()}{gpu}",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "lightning": lightning.__version__, "mlflow": mlflow.__version__, "numpy": numpy.__version__,
                     "forecast": forecast.__version__},
    }


def write_results(name: str, title: str, table_md: str, data: Any, notes: str = "") -> Path:
    """Write ``results/<name>.md`` (human) and ``results/<name>.json`` (machine), with the environment."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    md = [f"# {title}", "", f"- command: `{env['command']}`", f"- date: {env['date']}",
          f"- machine: {env['machine']}",
          "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), "", table_md.strip(), ""]
    if notes:
        md += [notes.strip(), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(json.dumps({"environment": env, "results": data}, indent=1, default=str))
    return RESULTS / f"{name}.md"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_subprocess_json(args: list[str], timeout: float = 3600, cwd: Path | None = None) -> dict:
    """Run ``python <args>`` in ``cwd`` (the repository root by default; ``python -c`` imports from there first); its
    last stdout line is JSON. Failures become NaN rows with the stderr's last line under ``error``."""
    import subprocess

    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=cwd or Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        return {"ms": float("nan"), "peak_mb": float("nan"), "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def etth1_cell(model: str, seq_len: int = 96, horizon: int = 96) -> tuple[Any, Any, Any]:
    """(config, DataModule, LightningModule) of an untrained ``model`` on ETTh1 at the configs' defaults for this
    lookback and horizon, built as ``forecast train`` builds them."""
    from forecast.pipeline.run import build
    from forecast.resolve import resolve

    cfg = resolve(model, "ETTh1", {"data.seq_len": seq_len, "data.horizon": horizon})
    return (cfg, *build(cfg, progress=False))


def model_step(model: str, params: dict, n: int, batch: int, steps: int, L: int = 96, H: int = 96,
               threads: int = 1, device: str = "cpu") -> dict:
    """Best training-step time and peak memory of ``model`` on random data, in a fresh process."""
    spec = {"model": model, "params": params, "n": n, "batch": batch, "steps": steps, "L": L, "H": H,
            "threads": threads, "device": device}
    return run_subprocess_json([str(Path(__file__).resolve().parent / "_step_worker.py"), json.dumps(spec)])


def step_seconds(module: Any, optimizer: Any, batches: Any) -> float:
    """Mean seconds of a plain training step of a ForecastModule over ``batches`` (any iterable of window batches):
    zero_grad, the module's loss on its own forward, backward, the optimizer's step; no Lightning."""
    import time

    module.train()
    n = 0
    t = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        module.loss_fn(module._predict(batch), batch["y"]).backward()
        optimizer.step()
        n += 1
    return (time.perf_counter() - t) / n


def timed_epochs(cfg: Any) -> dict[str, list[float]]:
    """Train ``cfg`` as ``forecast train`` does (a temporary store, no test pass, no artifacts) and return each
    epoch's seconds: ``loop`` from Lightning's train-epoch start to its validation start, ``epoch`` to the epoch's
    end (the loop and the validation pass).

    As in the command, the heap built so far is frozen when the fit begins (``forecast.process``: paused here,
    resumed by ``train``), so no full collection walks it mid-epoch. With the collector left as it was, one such
    walk landed in one epoch of every process: 0.35 s on a 0.4 s DLinear epoch."""
    import tempfile

    from forecast.pipeline import TrainOptions, train
    from forecast.process import pause_gc

    pause_gc()
    timer = epoch_timer()
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, TrainOptions(tracking_uri=f"sqlite:///{tmp}/m.db", quiet=True, callbacks=[timer],
                                evaluate_test=False, log_artifacts=False))
    marks = timer.marks
    return {"loop": [v - s for s, v in zip(marks["start"], marks["val"])],
            "epoch": [e - s for s, e in zip(marks["start"], marks["end"])]}


def epoch_timer():  # noqa: ANN201 (a Lightning callback, its class defined where Lightning is imported)
    """A callback that notes ``time.perf_counter()`` in ``.marks``: ``start``, ``val`` and ``end`` of every training
    epoch (its validation pass starts at ``val``), and ``test`` and ``test_end`` of the test pass."""
    import time

    import lightning.pytorch as pl

    class _Timer(pl.Callback):
        def __init__(self) -> None:
            self.marks: dict[str, list[float]] = {k: [] for k in ("start", "val", "end", "test", "test_end")}

        def on_train_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            self.marks["start"].append(time.perf_counter())

        def on_validation_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            self.marks["val"].append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
            self.marks["end"].append(time.perf_counter())

        def on_test_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            self.marks["test"].append(time.perf_counter())

        def on_test_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
            self.marks["test_end"].append(time.perf_counter())

    return _Timer()
