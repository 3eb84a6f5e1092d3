"""How the ``forecast`` process starts and ends: user mistakes become one line and an exit code, and a finished
command exits without the interpreter's teardown."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from forecast.errors import ForecastError, stale_store


def run_app(app: typer.Typer) -> None:
    """Run the Typer ``app`` on ``sys.argv``: user mistakes print one line and exit 2; no stack trace."""
    try:
        # click returns typer.Exit's code here instead of exiting; the name is `forecast` however it was started
        code = app(standalone_mode=False, prog_name="forecast")
        if isinstance(code, int) and code:
            sys.exit(code)
    except ForecastError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        stale = stale_store(exc)  # an upgraded MLflow on an older store
        if stale is not None:
            typer.echo(f"error: {stale}", err=True)
            sys.exit(stale.exit_code)
        # Usage errors (a missing or unknown option, a bad value): one line instead of click's usage block. typer
        # ships its own copy of click, so match by shape.
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = " ".join(str(exc.format_message()).split())
            typer.echo(f"error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        raise


def exit_after(main: Callable[[], None]) -> None:
    """Run ``main``, then leave the process with its exit code, skipping the interpreter's teardown.

    Lightning's imports (scipy, sympy, matplotlib, torch._dynamo) take 1-2 s to tear down after the last line is
    printed (``benchmarks/results/run_overhead.md``). What a normal exit does that matters is done first: idle
    thread pools are told to end and other threads are joined, atexit handlers run (logging's flush, weakref
    finalizers such as temporary folders, multiprocessing's children), and the output is flushed. An unexpected
    exception still propagates (a traceback, then the normal exit)."""
    import atexit
    import os
    import threading

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    # The interpreter's own first steps, in its order: threading's exit hooks (concurrent.futures wakes its idle
    # pool workers so that they end, as MLflow's download pool must), the join of every non-daemon thread, then
    # the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(code)
