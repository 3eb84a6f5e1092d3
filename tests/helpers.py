"""Test helpers: run the CLI in-process and capture its exit code and output."""

from __future__ import annotations

import sys

import pytest


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    import cli

    old = sys.argv
    sys.argv = ["forecast", *argv]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
