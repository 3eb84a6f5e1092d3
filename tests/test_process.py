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
