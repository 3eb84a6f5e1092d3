"""The house rules that keep the package easy to change: its import layers (import-linter's contracts in
pyproject.toml), no import cycle, modules of about 300 lines, and a predict path that never loads Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 300
# Modules allowed past MAX_LINES, with the reason (none today: add one only when a single story needs it).
LONG_MODULES: dict[str, str] = {}


@pytest.mark.slow
def test_import_layers_hold() -> None:
    """data -> windows -> backbone -> LightningModule -> tracking -> commands: no module imports a layer above it."""
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.argv = ['lint-imports']; lint_imports_command()"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycle_inside_the_package() -> None:
    import grimp

    graph = grimp.build_graph("forecast")
    cycles = [(m, d) for m in sorted(graph.modules) for d in graph.find_modules_directly_imported_by(m)
              if graph.chain_exists(importer=d, imported=m)]
    assert cycles == []


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("forecast/**/*.py"),
                                                                           ROOT / "cli.py"]))
def test_a_module_tells_one_story_in_about_300_lines(path: str) -> None:
    n = len((ROOT / path).read_text().splitlines())
    assert n <= MAX_LINES or path in LONG_MODULES, f"{path} has {n} lines; split it by concern"


@pytest.mark.slow
@pytest.mark.parametrize("modules", ["forecast.commands.predict, forecast.inference.io, forecast.artifact",
                                     "forecast.dashboard.page, forecast.dashboard.collect, forecast.dashboard.html"])
def test_predict_never_imports_lightning_or_optuna(modules: str) -> None:
    """`forecast predict`'s command module and everything it reaches, imported in a fresh process; and the dashboard's
    modules, which read the benchmark's results without the training stack (a lazy import in benchmark.grid)."""
    code = (f"import sys, {modules}; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
