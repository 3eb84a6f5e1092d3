"""The dashboard page: read the store, fill the template, write leaderboard.html, .md and .csv."""

from __future__ import annotations

import html
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

from plotly.offline import get_plotlyjs

from forecast import tracking
from forecast.benchmark.results import AS_PUBLISHED, TABLE_HEADER, Row, csv_table, table_cells
from forecast.dashboard.collect import Record, best_flags, build_rows, collect, select
from forecast.dashboard.html import cost_html, forecasts_html, leaderboard_html, matrix_html, steps_html
from forecast.errors import ForecastError, writable_folder
from forecast.process import write_text
from forecast.published import load_published


TEMPLATE = Path(__file__).resolve().parents[2] / "dashboards" / "templates" / "leaderboard.html"


@dataclass
class Dashboard:
    """What was written, for the command's summary line."""

    html: Path
    markdown: Path
    csv: Path
    rows: list[Row]
    n_runs: int
    selected: dict[tuple[str, int, str], list[Record]] = field(default_factory=dict)


def markdown(rows: list[Row], title: str, meta: str) -> str:
    """The leaderboard as Markdown, the best MSE/MAE of each dataset and horizon in bold."""
    lines = [f"# {title}", "", meta, "", "| " + " | ".join([*TABLE_HEADER, "runs"]) + " |",
             "|" + "---|" * (len(TABLE_HEADER) + 1)]
    for r, (bm, ba) in zip(rows, best_flags(rows)):
        c = table_cells(r)
        c[5], c[6] = (f"**{c[5]}**" if bm else c[5]), (f"**{c[6]}**" if ba else c[6])
        lines.append("| " + " | ".join([*c, " ".join(x[:8] for x in r.run_ids)]) + " |")
    return "\n".join([*lines, "", AS_PUBLISHED]) + "\n"


def build(tracking_uri: str | None = None, name: str | None = None, output: str | Path = "dashboards",
          ui_url: str | None = None, template: Path = TEMPLATE) -> Dashboard:
    """Read the store and write ``leaderboard.html``, ``leaderboard.md`` and ``leaderboard.csv`` into ``output``."""
    uri = tracking.resolve_uri(tracking_uri)
    tracking.require_store(uri)
    if ui_url is not None and not ui_url.startswith(("http://", "https://")):
        raise ForecastError(f"--ui-url must start with http:// or https://, got '{ui_url}'.")
    mlf = tracking.client(uri)
    records = collect(mlf, uri, name)
    selected = select(records)
    rows = build_rows(selected, load_published())
    title = f"Leaderboard · benchmark {name}" if name else "Leaderboard · all runs"
    n_used = sum(len(v) for v in selected.values())
    meta = (f"{len(rows)} results from {n_used} runs ({len(records)} finished runs with test metrics) in "
            f"{tracking.safe_url(uri)} · generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    page = string.Template(template.read_text()).substitute(
        title=html.escape(title), meta=html.escape(meta), plotlyjs=get_plotlyjs(),
        as_published=html.escape(AS_PUBLISHED),
        leaderboard=leaderboard_html(rows, ui_url), matrix=matrix_html(rows), cost=cost_html(rows),
        steps=steps_html(mlf, selected), forecasts=forecasts_html(mlf, selected, ui_url),
        coverage=steps_html(mlf, selected, "step_coverage.csv", "test coverage", "coverage", "coverage_"),
        footer=html.escape("forecast dashboard · published numbers: configs/published.yaml · runs: MLflow "
                           + (f"UI at {ui_url}" if ui_url else "(pass --ui-url to link run ids to the UI)")))
    out = writable_folder(Path(output), "--output")  # made only once there is a page to write
    paths = out / "leaderboard.html", out / "leaderboard.md", out / "leaderboard.csv"
    for path, text in zip(paths, (page, markdown(rows, title, meta), csv_table(rows))):
        write_text(path, text)  # killed while writing, the previous page stays whole
    return Dashboard(*paths, rows=rows, n_runs=len(records), selected=selected)
