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
(``string.Template`` placeholders); this module fills it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import string
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecast.benchmark import TABLE_HEADER, Row, csv_table, fmt, make_row, table_cells
from forecast.errors import ForecastError
from forecast.published import load_published

TEMPLATE = Path(__file__).resolve().parents[1] / "dashboards" / "templates" / "leaderboard.html"
GROUP_EXCLUDE = ("train.seed", "data.data_dir", "data.num_workers")
PALETTE = ["#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD", "#D62728", "#8C564B", "#E377C2", "#17BECF", "#BCBD22",
           "#7F7F7F"]  # neighbours in model order get clearly different hues


@dataclass
class Record:
    """The fields of one MLflow run that the dashboard uses."""

    run_id: str
    experiment_id: str
    run_name: str
    start_time: int
    model: str
    dataset: str
    horizon: int
    lookback: int
    seed: int | None
    test_mse: float
    test_mae: float
    train_seconds: float
    best_val_loss: float
    n_params: int | None
    group: str  # hash of the config without the seed

    def as_dict(self) -> dict[str, Any]:
        return {"test_mse": self.test_mse, "test_mae": self.test_mae, "train_seconds": self.train_seconds,
                "n_params": self.n_params, "run_id": self.run_id, "experiment_id": self.experiment_id}


@dataclass
class Dashboard:
    """What was written, for the command's summary line."""

    html: Path
    markdown: Path
    csv: Path
    rows: list[Row]
    n_runs: int
    selected: dict[tuple[str, int, str], list[Record]] = field(default_factory=dict)


# -- reading the store ----------------------------------------------------------------------------------------------
def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def to_record(run) -> Record | None:  # noqa: ANN001
    """A run as a Record, or None when it lacks what a leaderboard row needs (model, dataset, H, L)."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    model = t.get("model") or p.get("model.name")
    horizon, lookback = _int(p.get("data.horizon")), _int(p.get("data.seq_len"))
    dataset = t.get("dataset") or p.get("data.dataset")
    if not model or not dataset or horizon is None or lookback is None or "test_mae" not in m:
        return None
    cfg = {k: v for k, v in p.items() if k.split(".")[0] in ("data", "model", "train") and k not in GROUP_EXCLUDE}
    cfg["model.name"] = model
    group = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return Record(run.info.run_id, run.info.experiment_id, run.info.run_name or "", run.info.start_time or 0, model,
                  dataset, horizon, lookback, _int(p.get("train.seed")), m["test_mse"], m["test_mae"],
                  m.get("train_seconds", math.nan), m.get("best_val_loss", math.nan), _int(p.get("model.n_params")),
                  group)


def benchmark_names(mlf) -> list[str]:  # noqa: ANN001
    """The benchmark names recorded in the store (from the ``benchmark`` tag of any run)."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    if not exp_ids:
        return []
    runs = mlf.search_runs(exp_ids, filter_string="tags.benchmark != ''", max_results=50000)
    return sorted({r.data.tags["benchmark"] for r in runs if r.data.tags.get("benchmark")})


def collect(mlf, uri: str, name: str | None = None) -> list[Record]:  # noqa: ANN001
    """Every FINISHED run with test metrics (of benchmark ``name`` when given); ForecastError when there is none."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    where = "attributes.status = 'FINISHED' and metrics.test_mse >= 0"
    if name is not None:
        if "'" in name:
            raise ForecastError(f"--name '{name}' must not contain quotes.")
        where += f" and tags.benchmark = '{name}'"
    runs = mlf.search_runs(exp_ids, filter_string=where, max_results=50000) if exp_ids else []
    records = [r for r in (to_record(run) for run in runs) if r is not None]
    if not records:
        if name is not None:
            known = benchmark_names(mlf)
            raise ForecastError(f"no finished runs of benchmark '{name}' in {uri}; "
                                + (f"known benchmarks: {', '.join(known)}." if known else
                                   "no benchmark has been run there (`forecast benchmark ...`)."))
        raise ForecastError(f"no finished runs with test metrics in {uri}; run `forecast train` or "
                            "`forecast benchmark` first, or pass --tracking-uri.")
    return records


def select(records: list[Record]) -> dict[tuple[str, int, str], list[Record]]:
    """``{(dataset, horizon, model): runs}``: the lowest-validation-loss config group, newest run per seed."""
    cells: dict[tuple[str, int, str], dict[str, list[Record]]] = {}
    for r in records:
        cells.setdefault((r.dataset, r.horizon, r.model), {}).setdefault(r.group, []).append(r)
    out: dict[tuple[str, int, str], list[Record]] = {}
    for cell, groups in cells.items():
        best_key: tuple[float, float] | None = None
        for runs in groups.values():
            per_seed: dict[Any, Record] = {}
            for r in sorted(runs, key=lambda r: r.start_time):
                per_seed[r.seed] = r  # the newest run of each seed
            chosen = sorted(per_seed.values(), key=lambda r: r.start_time)
            vals = [r.best_val_loss for r in chosen if r.best_val_loss == r.best_val_loss]
            score = (sum(vals) / len(vals) if vals else math.inf, -max(r.start_time for r in chosen))
            if best_key is None or score < best_key:
                best_key, out[cell] = score, chosen
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0].lower(), kv[0][1], kv[0][2])))


def build_rows(selected: dict[tuple[str, int, str], list[Record]], published: dict) -> list[Row]:
    """Leaderboard rows (reusing the benchmark's aggregation: mean ± std over seeds, published number, Δ)."""
    return [make_row(d, h, m, runs[0].lookback, [r.as_dict() for r in runs], published)
            for (d, h, m), runs in selected.items()]


def best_flags(rows: list[Row]) -> list[tuple[bool, bool]]:
    """For each row: (lowest MSE, lowest MAE) within its (dataset, horizon) block, compared at the 3 decimals
    shown, so every model that ties on the page is marked."""
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for r in rows:
        b = best.get((r.dataset, r.horizon), (math.inf, math.inf))
        best[(r.dataset, r.horizon)] = (min(b[0], round(r.mse, 3)), min(b[1], round(r.mae, 3)))
    return [(round(r.mse, 3) == best[(r.dataset, r.horizon)][0], round(r.mae, 3) == best[(r.dataset, r.horizon)][1])
            for r in rows]


# -- HTML pieces ----------------------------------------------------------------------------------------------------
def run_url(ui_url: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """The run's page in the MLflow UI, ``<ui>/#/experiments/<exp>/runs/<run>``, or None without a UI URL."""
    if not ui_url or not experiment_id:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _run_links(ids: list[str], experiment_ids: list[str | None], ui_url: str | None) -> str:
    out = []
    for rid, exp in zip(ids, experiment_ids):
        url = run_url(ui_url, exp, rid)
        short = html.escape(rid[:8])
        out.append(f'<a href="{html.escape(url)}" title="{rid}" target="_blank" rel="noopener">{short}</a>' if url
                   else f'<span title="{rid}">{short}</span>')
    return " ".join(out)


def leaderboard_html(rows: list[Row], ui_url: str | None) -> str:
    """The long leaderboard table (``id="leaderboard"``): one row per dataset, horizon and model."""
    head = "".join(f'<th class="{"l" if c in ("dataset", "model") else ""}">{html.escape(c)}</th>'
                   for c in [*TABLE_HEADER, "runs"])
    body = []
    prev = None
    for r, (best_mse, best_mae) in zip(rows, best_flags(rows)):
        cells = table_cells(r)
        cls = ["l", "", "l", "", "", "best" if best_mse else "", "best" if best_mae else "", "pub",
               _delta_class(r.delta_mse), "pub", _delta_class(r.delta_mae), "", ""]
        src = html.escape(r.published.source) if r.published else ""
        tds = []
        for i, (c, k) in enumerate(zip(cells, cls)):
            title = f' title="{src}"' if i in (7, 9) and src else ""
            tds.append(f'<td class="{k}"{title}>{html.escape(c)}</td>')
        tds.append(f'<td class="l runs">{_run_links(r.run_ids, r.experiment_ids, ui_url)}</td>')
        first = ' class="first"' if prev is not None and prev != (r.dataset, r.horizon) else ""
        prev = (r.dataset, r.horizon)
        body.append(f'<tr{first} data-dataset="{html.escape(r.dataset)}" data-horizon="{r.horizon}" '
                    f'data-model="{html.escape(r.model)}">{"".join(tds)}</tr>')
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _delta_class(delta: float) -> str:
    if delta != delta:
        return ""
    return "better" if delta <= 0.0005 else "worse"


def matrix_html(rows: list[Row]) -> str:
    """The papers' layout: a row per (dataset, H), a column pair per model, the best of each row bold."""
    models = sorted({r.model for r in rows})
    keys = sorted({(r.dataset, r.horizon) for r in rows}, key=lambda k: (k[0].lower(), k[1]))
    by = {(r.dataset, r.horizon, r.model): r for r in rows}
    head1 = '<th class="l" rowspan="2">dataset</th><th rowspan="2">H</th>' + "".join(
        f'<th colspan="2">{html.escape(m)}</th>' for m in models)
    head2 = "".join("<th>MSE</th><th>MAE</th>" for _ in models)
    body = []
    for d, h in keys:
        present = [by[(d, h, m)] for m in models if (d, h, m) in by]
        bmse, bmae = min(round(r.mse, 3) for r in present), min(round(r.mae, 3) for r in present)
        tds = [f'<td class="l">{html.escape(d)}</td><td>{h}</td>']
        for m in models:
            r = by.get((d, h, m))
            if r is None:
                tds.append("<td></td><td></td>")
                continue
            tds.append(f'<td class="{"best" if round(r.mse, 3) == bmse else ""}">{fmt(r.mse)}</td>'
                       f'<td class="{"best" if round(r.mae, 3) == bmae else ""}">{fmt(r.mae)}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    return (f'<table id="matrix"><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _colors(models: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(models)))}


def _fig_html(fig, div_id: str) -> str:  # noqa: ANN001
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def cost_html(rows: list[Row]) -> str:
    """Test MSE against training time and parameter count, one pair of panels per dataset."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = sorted({r.dataset for r in rows}, key=str.lower)
    colors = _colors([r.model for r in rows])
    fig = make_subplots(rows=len(datasets), cols=2, horizontal_spacing=0.08, vertical_spacing=0.14,
                        subplot_titles=[t for d in datasets for t in (f"{d}: MSE vs training time",
                                                                       f"{d}: MSE vs parameters")])
    shown: set[str] = set()
    for i, d in enumerate(datasets, start=1):
        for model in sorted({r.model for r in rows if r.dataset == d}):
            sel = [r for r in rows if r.dataset == d and r.model == model]
            text = [f"{model} · {d} · H={r.horizon} · L={r.lookback}<br>MSE {r.mse:.4f}, MAE {r.mae:.4f}<br>"
                    f"{r.train_seconds:.1f} s, {r.n_params or 0:,} params" for r in sel]
            for col, xs in ((1, [r.train_seconds for r in sel]), (2, [r.n_params for r in sel])):
                fig.add_trace(go.Scatter(
                    x=xs, y=[r.mse for r in sel], mode="markers+text", name=model, legendgroup=model,
                    showlegend=model not in shown, text=[f"H{r.horizon}" for r in sel], textposition="top center",
                    textfont={"size": 9}, hovertext=text, hoverinfo="text",
                    marker={"color": colors[model], "size": 10, "line": {"width": 1, "color": "white"}}),
                    row=i, col=col)
                shown.add(model)
        mine = [r for r in rows if r.dataset == d]
        fig.update_xaxes(type=_axis_type([r.train_seconds for r in mine]), title_text="training time (s)", row=i,
                         col=1)
        fig.update_xaxes(type=_axis_type([r.n_params for r in mine]), title_text="parameters", row=i, col=2)
        fig.update_yaxes(title_text="test MSE", row=i, col=1)
    fig.update_layout(height=360 * len(datasets) + 60, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      template="plotly_white", legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0,
                                                       "xanchor": "left", "title": {"text": ""}})
    fig.update_layout(legend={"y": 1 + 40 / fig.layout.height})
    return _fig_html(fig, "cost-chart")


def _axis_type(values: list[float | int | None]) -> str:
    """A log axis when the values span a decade or more (models differ by orders of magnitude), else linear."""
    vals = [v for v in values if v is not None and v == v and v > 0]
    return "log" if vals and max(vals) / min(vals) >= 10 else "linear"


def read_step_mse(mlf, run_id: str, tmp: Path) -> list[float] | None:  # noqa: ANN001
    """The run's per-step test MSE (its step_mse.csv artifact), or None when it has none."""
    try:
        path = Path(mlf.download_artifacts(run_id, "step_mse.csv", str(tmp)))
        lines = path.read_text().strip().splitlines()[1:]
        return [float(line.split(",")[1]) for line in lines]
    except Exception:  # noqa: BLE001 - a missing or unreadable artifact only leaves a gap in the chart
        return None


def steps_html(mlf, selected: dict[tuple[str, int, str], list[Record]]) -> str:  # noqa: ANN001
    """Per dataset: one panel per horizon, one line per model (the first run of each selected group)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = _colors([m for (_, _, m) in selected])
    curves: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (cell, runs) in enumerate(selected.items()):
            sub = Path(tmp) / str(i)
            sub.mkdir()
            values = read_step_mse(mlf, runs[0].run_id, sub)
            if values:
                curves[cell] = values
    if not curves:
        return '<p class="empty">No step_mse.csv artifacts in the selected runs.</p>'
    parts = []
    for d in sorted({c[0] for c in curves}, key=str.lower):
        horizons = sorted({h for (dd, h, _) in curves if dd == d})
        fig = make_subplots(rows=1, cols=len(horizons), subplot_titles=[f"{d} H={h}" for h in horizons],
                            horizontal_spacing=0.05)
        shown: set[str] = set()
        for j, h in enumerate(horizons, start=1):
            for (dd, hh, m), values in curves.items():
                if dd != d or hh != h:
                    continue
                fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines", name=m,
                                         legendgroup=m, showlegend=m not in shown,
                                         line={"color": colors[m], "width": 1.6}), row=1, col=j)
                shown.add(m)
            fig.update_xaxes(title_text="step", row=1, col=j)
        fig.update_yaxes(title_text="test MSE", row=1, col=1)
        fig.update_layout(height=330, margin={"l": 60, "r": 20, "t": 60, "b": 40}, template="plotly_white",
                          legend={"orientation": "h", "y": 1.18, "yanchor": "bottom", "x": 0, "xanchor": "left"})
        parts.append(_fig_html(fig, f"steps-{_slug(d)}"))
    return "\n".join(parts)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def forecasts_html(mlf, selected: dict[tuple[str, int, str], list[Record]], ui_url: str | None) -> str:  # noqa: ANN001
    """For each model and dataset, its lowest-test-MSE selected run's forecast.png, embedded as base64."""
    best: dict[tuple[str, str], Record] = {}
    for (d, _, m), runs in selected.items():
        for r in runs:
            if (m, d) not in best or r.test_mse < best[(m, d)].test_mse:
                best[(m, d)] = r
    cards = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, ((m, d), r) in enumerate(sorted(best.items(), key=lambda kv: (kv[0][1].lower(), kv[0][0]))):
            sub = Path(tmp) / str(i)
            sub.mkdir()
            try:
                png = Path(mlf.download_artifacts(r.run_id, "forecast.png", str(sub))).read_bytes()
            except Exception:  # noqa: BLE001 - runs without the plot are simply left out
                continue
            data = base64.b64encode(png).decode()
            cards.append(f'<div class="card"><h3>{html.escape(m)} · {html.escape(d)} · H={r.horizon} · L='
                         f'{r.lookback} · test MSE {r.test_mse:.3f} · run '
                         f'{_run_links([r.run_id], [r.experiment_id], ui_url)}</h3>'
                         f'<img alt="forecast of {html.escape(m)} on {html.escape(d)}" '
                         f'src="data:image/png;base64,{data}"></div>')
    if not cards:
        return '<p class="empty">No forecast.png artifacts in the selected runs.</p>'
    return f'<div class="cards">{"".join(cards)}</div>'


def markdown(rows: list[Row], title: str, meta: str) -> str:
    """The leaderboard as Markdown, the best MSE/MAE of each dataset and horizon in bold."""
    lines = [f"# {title}", "", meta, "", "| " + " | ".join([*TABLE_HEADER, "runs"]) + " |",
             "|" + "---|" * (len(TABLE_HEADER) + 1)]
    for r, (bm, ba) in zip(rows, best_flags(rows)):
        c = table_cells(r)
        c[5], c[6] = (f"**{c[5]}**" if bm else c[5]), (f"**{c[6]}**" if ba else c[6])
        lines.append("| " + " | ".join([*c, " ".join(x[:8] for x in r.run_ids)]) + " |")
    return "\n".join(lines) + "\n"


# -- the page -------------------------------------------------------------------------------------------------------
def build(tracking_uri: str | None = None, name: str | None = None, output: str | Path = "dashboards",
          ui_url: str | None = None, template: Path = TEMPLATE) -> Dashboard:
    """Read the store and write ``leaderboard.html``, ``leaderboard.md`` and ``leaderboard.csv`` into ``output``."""
    from plotly.offline import get_plotlyjs

    from forecast import tracking

    uri = tracking.resolve_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ForecastError(f"no MLflow store at {uri}; train or benchmark first, or pass --tracking-uri.")
    if ui_url is not None and not ui_url.startswith(("http://", "https://")):
        raise ForecastError(f"--ui-url must start with http:// or https://, got '{ui_url}'.")
    mlf = tracking.client(uri)
    records = collect(mlf, uri, name)
    selected = select(records)
    rows = build_rows(selected, load_published())
    title = f"Leaderboard · benchmark {name}" if name else "Leaderboard · all runs"
    n_used = sum(len(v) for v in selected.values())
    meta = (f"{len(rows)} results from {n_used} runs ({len(records)} finished runs with test metrics) in "
            f"{_safe_uri(uri)} · generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    page = string.Template(template.read_text()).substitute(
        title=html.escape(title), meta=html.escape(meta), plotlyjs=get_plotlyjs(),
        leaderboard=leaderboard_html(rows, ui_url), matrix=matrix_html(rows), cost=cost_html(rows),
        steps=steps_html(mlf, selected), forecasts=forecasts_html(mlf, selected, ui_url),
        footer=html.escape("forecast dashboard · published numbers: configs/published.yaml · runs: MLflow "
                           + (f"UI at {ui_url}" if ui_url else "(pass --ui-url to link run ids to the UI)")))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "leaderboard.html", out / "leaderboard.md", out / "leaderboard.csv"
    paths[0].write_text(page, encoding="utf-8")
    paths[1].write_text(markdown(rows, title, meta))
    paths[2].write_text(csv_table(rows))
    return Dashboard(*paths, rows=rows, n_runs=len(records), selected=selected)


def _safe_uri(uri: str) -> str:
    """The store URI without a password."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def command(tracking_uri: str | None, name: str | None, output: Path, ui_url: str | None, quiet: bool) -> None:
    """``forecast dashboard``: build the page and say where it is."""
    result = build(tracking_uri, name, output, ui_url)
    if quiet:
        return
    size = result.html.stat().st_size / 1e6
    print(f"wrote {result.html} ({size:.1f} MB, {len(result.rows)} results from {result.n_runs} runs), "
          f"{result.markdown} and {result.csv}")
    print(f"open it: file://{result.html.resolve()}")
