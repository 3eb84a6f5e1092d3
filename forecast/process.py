"""What a process leaves behind when it stops: files written whole or not at all, and signals that end work cleanly.

- :func:`atomic_path`: write to ``.<name>.<pid>.tmp`` beside the target, rename it into place when done; on an
  error or an interrupt the temp file is removed, and one left by a killed process (its pid no longer alive) is
  removed the next time the same file is written.
- :func:`sigterm_as_interrupt`: while held, SIGTERM behaves like Ctrl-C, so the code that ends runs KILLED and
  removes temp files on a KeyboardInterrupt runs for a SIGTERM too.
- :func:`pause_gc` and :func:`resume_gc`: how a ``forecast`` process starts. Its imports (torch, Lightning, MLflow
  and SQLAlchemy: about 5,000 modules and 700,000 objects that live as long as the process) look to Python's
  cyclic garbage collector like a heap growing fast, so it walked all of it eight times on the way, 1.1 s of a
  DLinear run's 5.4 s start (``benchmarks/gc_startup.py``). The command pauses the collector before anything is
  imported; when its work begins, what start-up built is frozen (``gc.freeze``: no later collection walks it) and
  the collector runs again. What start-up frees in cycles stays with the frozen objects (the imports make little
  of it); everything made after is collected as usual. A ``forecast serve`` worker does the same around its
  imports and model load (``forecast.inference.server.create_app``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def owner() -> str:
    """``host:pid`` of this process: who owns a run, a trial or a temp file, so a later process can tell whether the
    owner is still alive (on the same host)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_owner(who: str) -> bool:
    """Whether ``who`` (an :func:`owner` string) is a process of this host that is no longer running; False for
    another host's process, this process, or a malformed string."""
    host, _, pid = who.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid))


def remove_stale_temp(path: Path) -> None:
    """Temp files of ``path`` left by processes that were killed while writing it."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed onto ``path`` when the block ends without an error, removed
    otherwise. Readers see the old file or the new one, never a partial one."""
    path = Path(path)
    remove_stale_temp(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While it is held, SIGTERM behaves like Ctrl-C (the running run ends KILLED, temp files are removed, and the
    command exits 130). Only the main thread can install it; elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


_paused = False  # whether pause_gc turned the collector off (resume_gc undoes only that)


def pause_gc() -> None:
    """A process's start-up begins: no cyclic garbage collection until :func:`resume_gc`. Called only where the
    process is the package's own: the ``forecast`` command (``cli.entry``, before its imports) and a serving worker
    (``create_app``)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """A command's work begins (the first epoch, serving, forecasting): freeze every object start-up made, so that no
    later collection walks it again, and collect again. Does nothing unless :func:`pause_gc` paused the collector:
    a program that calls the package keeps its collector as it set it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
