"""``forecast dashboard``: an offline HTML leaderboard (plus Markdown and CSV) from the runs in an MLflow store.

Reads every FINISHED run that has test metrics (or only those tagged ``benchmark=<name>``), picks one
configuration per (dataset, horizon, model) and writes ``leaderboard.html``, ``leaderboard.md`` and
``leaderboard.csv`` into the output folder (``dashboards/`` by default, git-ignored).

**Which runs make a row.** Runs of one (dataset, horizon, model) are grouped by their configuration without the
seed (the MLflow params except ``train.seed``, ``data.data_dir`` and ``data.num_workers``); inside a group the
newest run of each seed counts. The group with the lowest mean validation loss is shown (never the test loss), so
a smoke run never hides a full one, and seeds are averaged (mean ± sample std).

The page is one self-contained file: plotly's JavaScript is inlined once (``plotly.offline.get_plotlyjs``, what
``include_plotlyjs=True`` embeds), the forecast plots are the runs' ``forecast.png`` artifacts as base64 PNGs, and
nothing is loaded from the network. The HTML skeleton is ``dashboards/templates/leaderboard.html``
(``string.Template`` placeholders); ``page`` fills it.

Modules: ``collect`` (runs to rows), ``html`` (the sections), ``page`` (the file).
"""

from forecast.dashboard.page import Dashboard, build

__all__ = ["Dashboard", "build"]
