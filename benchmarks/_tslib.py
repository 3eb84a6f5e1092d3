"""Running Time-Series-Library's own code beside forecast (benchmarks/eval_speed.py, train_speed.py).

``prepare(checkout)`` makes its experiment classes importable from a checkout of thuml/Time-Series-Library (e.g. a
``git archive`` of it): modules it imports only for other tasks (sktime, Hugging Face datasets, patoolib,
reformer_pytorch, einops) are stubbed when they are not installed, and the working directory becomes a scratch
folder holding a link to its ``models/`` (what its model scan reads), the ETTh1 CSV and whatever it writes
(checkpoints, PDFs, results). ``args`` are run.py's defaults with the ETTh1 long-term script's settings.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import tempfile
import types
from pathlib import Path

STUBS = {"sktime": {}, "sktime.datasets": {"load_from_tsfile_to_dataframe": None}, "datasets": {"load_dataset": None},
         "huggingface_hub": {"hf_hub_download": None}, "patoolib": {}, "reformer_pytorch": {"LSHSelfAttention": None},
         "einops": {"rearrange": None, "repeat": None}}
NAMES = {"dlinear": "DLinear", "itransformer": "iTransformer"}


def prepare(checkout: Path) -> Path:
    """Import TSLib from ``checkout``; chdir into a fresh scratch folder (returned) with ``models/`` and ETTh1.csv.
    A path that is not a TSLib checkout, or no ETTh1 file, ends the script with one line that says so."""
    if not (checkout / "exp" / "exp_long_term_forecasting.py").is_file():
        raise SystemExit(f"{checkout} is not a Time-Series-Library checkout (no exp/exp_long_term_forecasting.py); "
                         "pass --tslib the folder of a clone or `git archive` of thuml/Time-Series-Library.")
    src = Path(os.environ.get("FORECAST_DATA_DIR", "")) / "ETTh1.csv.gz"
    if not src.is_file():
        raise SystemExit(f"no {src}; set FORECAST_DATA_DIR to the folder of the benchmark CSVs (../shared/data).")
    for name, attrs in STUBS.items():  # only modules the ETTh1 long-term path never reaches
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.SimpleNamespace(**attrs)
    sys.path.insert(0, str(checkout.resolve()))
    scratch = Path(tempfile.mkdtemp(prefix="tslib-"))
    (scratch / "models").symlink_to(checkout.resolve() / "models")
    (scratch / "ETTh1.csv").write_bytes(gzip.decompress(src.read_bytes()))
    os.chdir(scratch)
    return scratch


def args(model: str, workers: int, root: Path, epochs: int = 10, seq_len: int = 96) -> types.SimpleNamespace:
    """run.py's defaults for these keys, with the ETTh1 script's settings (M, L=96 unless given, label 48, H=96,
    batch 32);
    iTransformer at forecast's ETTh1 size (d_model = d_ff = 256, 2 layers, 8 heads)."""
    itr = model == "iTransformer"
    return types.SimpleNamespace(
        task_name="long_term_forecast", is_training=1, model_id="ETTh1_96_96", model=model, data="ETTh1",
        root_path=str(root), data_path="ETTh1.csv", features="M", target="OT", freq="h", checkpoints="./checkpoints/",
        seq_len=seq_len, label_len=48, pred_len=96, seasonal_patterns="Monthly", inverse=False, expand=2, d_conv=4,
        top_k=5, num_kernels=6, enc_in=7, dec_in=7, c_out=7, d_model=256 if itr else 512, n_heads=8, e_layers=2,
        d_layers=1, d_ff=256 if itr else 2048, moving_avg=25, factor=3, distil=True, dropout=0.1, embed="timeF",
        activation="gelu", channel_independence=1, decomp_method="moving_avg", use_norm=1, down_sampling_layers=0,
        down_sampling_window=1, down_sampling_method=None, seg_len=96, num_workers=workers, itr=1,
        train_epochs=epochs, batch_size=32, patience=epochs + 1, learning_rate=0.0001, des="Exp", loss="MSE",
        lradj="type1", use_amp=False, use_gpu=False, gpu=0, gpu_type="cuda", use_multi_gpu=False, devices="0",
        p_hidden_dims=[128, 128], p_hidden_layers=2, use_dtw=False, augmentation_ratio=0)


@contextlib.contextmanager
def quiet_stdout():
    """TSLib prints as it goes; keep what it printed."""
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf
