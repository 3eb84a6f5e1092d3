"""Files are written whole or not at all, and what a killed writer left is cleaned up the next time; the quick exit
loses nothing; the garbage collector is paused through start-up and resumes, frozen, when the work begins."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forecast.process import atomic_path, resume_gc, write_text


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    page = tmp_path / "leaderboard.html"
    page.write_text("the previous page")
    with pytest.raises(KeyboardInterrupt), atomic_path(page) as tmp:
        tmp.write_text("half a pa")
        raise KeyboardInterrupt
    assert page.read_text() == "the previous page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.html"]
    write_text(page, "the new page")
    assert page.read_text() == "the new page" and len(list(tmp_path.iterdir())) == 1


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited: its pid is not alive (or is another process's; see below)
    out = tmp_path / "forecast.csv"
    stale = tmp_path / f".forecast.csv.{pid}.tmp"
    stale.write_text("partial")
    other = tmp_path / ".other.csv.1.tmp"  # another file's temp is not ours to remove
    other.write_text("x")
    write_text(out, "date,OT\n")
    assert out.read_text() == "date,OT\n"
    assert not stale.exists() or Path(f"/proc/{pid}").exists()  # unless the pid was reused meanwhile
    assert other.exists()


EXIT_SCRIPT = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from forecast.commands.entry import exit_after

out = sys.argv[1]
atexit.register(lambda: open(out + '.atexit', 'w').write('ran'))
worker = threading.Thread(target=lambda: (time.sleep(0.3), open(out + '.thread', 'w').write('done')))

pool = ThreadPoolExecutor(2)  # kept alive, as MLflow keeps its download pool: its idle workers wait on a queue

def main():
    pool.submit(lambda: None).result()
    worker.start()
    print('x' * 200_000, end='')  # more than a pipe holds: the flush must happen before the exit
    sys.exit({code})

exit_after(main)
open(out + '.after', 'w').write('exit_after returned')
"""


@pytest.mark.parametrize("code, rc, err", [("3", 3, ""), ("None", 0, ""), ("'no such file'", 1, "no such file")])
def test_the_quick_exit_keeps_the_exit_code_the_output_threads_and_atexit_work(code: str, rc: int, err: str,
                                                                                 tmp_path: Path) -> None:
    """`forecast` skips the interpreter's teardown (forecast.commands.entry.exit_after) but nothing a normal exit
    would have finished: a running thread, an idle thread pool (it must be told to end, or the exit waits for it
    forever), atexit handlers and buffered output."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(code=code), str(out)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout == "x" * 200_000 and proc.stderr.strip() == err
    assert (tmp_path / "run.atexit").read_text() == "ran" and (tmp_path / "run.thread").read_text() == "done"
    assert not (tmp_path / "run.after").exists()


GC_SCRIPT = """
import atexit, gc, json, sys
import forecast.process as process

seen = {}
real_resume = process.resume_gc

def resume():  # what the collector was doing when the run's work began, and after
    seen.setdefault("before", [gc.isenabled(), all(m in sys.modules for m in ("torch", "lightning", "mlflow"))])
    real_resume()
    seen.setdefault("after", [gc.isenabled(), gc.get_freeze_count() > 0])

process.resume_gc = resume
out, uri = sys.argv[1:3]
atexit.register(lambda: open(out, "w").write(json.dumps({**seen, "at_exit": gc.isenabled()})))
sys.argv = ["forecast", "train", "-d", "ETTh1", "-m", "dlinear", "--seq-len", "96", "--horizon", "24", "--epochs",
            "1", "--set", "train.limit_train_batches=4", "--tracking-uri", uri, "-q"]
import cli
cli.entry()
"""


def test_the_collector_is_paused_through_start_up_and_resumes_frozen_when_the_run_begins(data_dir: Path,
                                                                                          tmp_path: Path) -> None:
    """`forecast` imports torch, Lightning and MLflow with the cyclic collector off (it walked their 700,000 objects
    eight times, a second of every run); when training begins it collects again, and what start-up built is
    frozen out of its walks (forecast.process)."""
    out = tmp_path / "gc.json"
    env = {**os.environ, "FORECAST_DATA_DIR": str(data_dir), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", GC_SCRIPT, str(out), f"sqlite:///{tmp_path}/m.db"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert seen == {"before": [False, True], "after": [True, True], "at_exit": True}


def test_resuming_leaves_a_collector_it_did_not_pause_as_it_was() -> None:
    """A program that calls the package (here, pytest) keeps its collector: nothing is frozen, nothing turned on."""
    frozen = gc.get_freeze_count()
    gc.disable()
    try:
        resume_gc()
        assert not gc.isenabled() and gc.get_freeze_count() == frozen
    finally:
        gc.enable()
