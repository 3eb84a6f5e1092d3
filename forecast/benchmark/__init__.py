"""``forecast benchmark``: a grid of models x datasets x horizons x seeds, resumable, recorded in MLflow.

Every cell trains through :func:`forecast.pipeline.train` (the path of ``forecast train``) with the defaults from
configs/ for its dataset and horizon, plus the grid's ``--set`` overrides. MLflow gets one parent run per
invocation (tag ``benchmark_role=parent``) and one nested run per cell (``benchmark_role=cell``), all in the
experiment ``benchmark-<name>`` and tagged ``benchmark=<name>`` and ``config_hash=<hash>``.

**Config hash.** The sha256 (first 16 hex digits) of the fully resolved config (``RunConfig.to_dict()``: model
name, every ``data.*``, ``model.*`` and ``train.*`` value, the seed included), leaving out only what says where
the data is read from and how (``data.data_dir``, ``data.num_workers``), which does not change the numbers, and
``data.mark_freq`` while unset, ``train.drop_last`` while false and ``train.shuffle`` while ``seed`` (those keys
are newer than the first recorded cells).

**Resume.** Before training, the cells whose hash already has a FINISHED run with test metrics under the same
benchmark name (in any experiment of the store) are skipped and their recorded metrics reused. A Ctrl-C or
SIGTERM ends the running cell's run as KILLED (an exception in a cell: FAILED) and the parent as KILLED, so
the same command later runs only the cells left. Within a cell, the training state is saved after every epoch
(``checkpoints/<name>/<hash>/`` beside a local sqlite store, see :func:`forecast.tracking.checkpoint_root`), so
an interrupted cell goes on from its last finished epoch, with the same result as an uninterrupted run, in a
new run tagged ``resumed_after_epoch``. The directory is removed when the cell finishes.

Modules: ``grid`` (options, cells, the hash), ``store`` (MLflow records), ``progress`` (the terminal),
``runner`` (running the grid), ``results`` (rows and tables; the dashboard's only import from here). This file
imports none of them, so the dashboard reads ``results`` without loading the training stack.
"""
