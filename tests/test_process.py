"""Files are written whole or not at all, and what a killed writer left is cleaned up the next time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forecast.process import atomic_path, write_text


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
