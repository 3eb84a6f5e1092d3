"""The dashboard's sections as HTML: the leaderboard, the model x cell matrix, cost plots, per-step MSE and
forecast plots (plotly figures without their JavaScript, which the page inlines once)."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from mlflow import MlflowClient
from plotly.subplots import make_subplots

from forecast.benchmark.results import TABLE_HEADER, Row, fmt, table_cells
from forecast.dashboard.collect import Record, best_flags, read_steps
from forecast.models import BASELINES


PALETTE = ["#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD", "#D62728", "#8C564B", "#E377C2", "#17BECF", "#BCBD22",
           "#7F7F7F"]  # neighbours in model order get clearly different hues


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
        styles = {"dataset": "l", "model": "l", "test MSE": "best" if best_mse else "",
                  "test MAE": "best" if best_mae else "", "published MSE": "pub", "Δ MSE": _delta_class(r.delta_mse),
                  "published MAE": "pub", "Δ MAE": _delta_class(r.delta_mae)}
        src = html.escape(r.published.source) if r.published else ""
        tds = []
        for col, c in zip(TABLE_HEADER, cells, strict=True):  # a cell under every header
            title = f' title="{src}"' if styles.get(col) == "pub" and src else ""
            tds.append(f'<td class="{styles.get(col, "")}"{title}>{html.escape(c)}</td>')
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


def _fig_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def cost_html(rows: list[Row]) -> str:
    """Test MSE against training time and parameter count, one pair of panels per dataset; the baselines
    (naive, seasonal_naive) as dotted reference lines."""
    datasets = sorted({r.dataset for r in rows}, key=str.lower)
    colors = _colors([r.model for r in rows])
    fig = make_subplots(rows=len(datasets), cols=2, horizontal_spacing=0.08, vertical_spacing=0.14,
                        subplot_titles=[t for d in datasets for t in (f"{d}: MSE vs training time",
                                                                       f"{d}: MSE vs parameters")])
    shown: set[str] = set()
    for i, d in enumerate(datasets, start=1):
        for model in sorted({r.model for r in rows if r.dataset == d and r.model not in BASELINES}):
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
        for r in sorted((r for r in rows if r.dataset == d and r.model in BASELINES), key=lambda r: r.horizon):
            # no training time and no parameters: a reference line across both panels, not a point
            fig.add_hline(y=r.mse, line={"dash": "dot", "width": 1, "color": colors[r.model]}, row=i, col="all",
                          annotation_text=f"{r.model} H{r.horizon}", annotation_font={"size": 9},
                          annotation_position="top left", exclude_empty_subplots=False)
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


def _step_curves(mlf: MlflowClient, selected: dict[tuple[str, int, str], list[Record]], name: str, prefix: str
                 ) -> dict[tuple[str, int, str], dict[str, list[float]]]:
    """``{(dataset, H, model): {column: values per step}}`` from the first run of each selected group, the columns
    whose name starts with ``prefix``."""
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (cell, runs) in enumerate(selected.items()):
            sub = Path(tmp) / str(i)
            sub.mkdir()
            values = {c: v for c, v in read_steps(mlf, runs[0].run_id, name, sub).items() if c.startswith(prefix)}
            if values:
                curves[cell] = values
    return curves


def steps_html(mlf: MlflowClient, selected: dict[tuple[str, int, str], list[Record]], name: str = "step_mse.csv",
               y_title: str = "test MSE", chart: str = "steps", prefix: str = "") -> str:
    """Per dataset: one panel per horizon, one line per model and column of the runs' ``name`` artifact whose name
    starts with ``prefix`` (the test MSE per step; or the coverage of each conformal interval per step, dashed per
    level, with the nominal levels as dotted lines)."""
    colors = _colors([m for (_, _, m) in selected])
    curves = _step_curves(mlf, selected, name, prefix)
    if not curves:
        return f'<p class="empty">No {html.escape(name)} artifacts in the selected runs.</p>'
    parts = []
    for d in sorted({c[0] for c in curves}, key=str.lower):
        horizons = sorted({h for (dd, h, _) in curves if dd == d})
        fig = make_subplots(rows=1, cols=len(horizons), subplot_titles=[f"{d} H={h}" for h in horizons],
                            horizontal_spacing=0.05)
        shown: set[str] = set()
        for j, h in enumerate(horizons, start=1):
            nominal: set[float] = set()
            for (dd, hh, m), columns in curves.items():
                if dd != d or hh != h:
                    continue
                for k, (column, values) in enumerate(columns.items()):
                    label = m if len(columns) == 1 else f"{m} {column.replace('coverage_', '')}%"
                    dash = "dot" if m in BASELINES else ("solid", "dash", "dashdot")[k % 3]
                    fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines", name=label,
                                             legendgroup=label, showlegend=label not in shown,
                                             line={"color": colors[m], "width": 1.6, "dash": dash}), row=1, col=j)
                    shown.add(label)
                    if column.startswith("coverage_"):
                        nominal.add(float(column.removeprefix("coverage_")) / 100)
            for level in sorted(nominal):
                fig.add_hline(y=level, line={"dash": "dot", "width": 1, "color": "#555"}, row=1, col=j,
                              annotation_text=f"nominal {level:.0%}", annotation_font={"size": 9})
            fig.update_xaxes(title_text="step", row=1, col=j)
        fig.update_yaxes(title_text=y_title, row=1, col=1)
        fig.update_layout(height=330, margin={"l": 60, "r": 20, "t": 60, "b": 40}, template="plotly_white",
                          legend={"orientation": "h", "y": 1.18, "yanchor": "bottom", "x": 0, "xanchor": "left"})
        parts.append(_fig_html(fig, f"{chart}-{_slug(d)}"))
    return "\n".join(parts)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def forecasts_html(mlf: MlflowClient, selected: dict[tuple[str, int, str], list[Record]],
                   ui_url: str | None) -> str:
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
