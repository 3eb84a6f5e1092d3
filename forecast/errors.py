"""User-facing errors: one line that says what is wrong, where, and how to fix it."""

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path


class ForecastError(Exception):
    """A mistake in the user's input. The CLI prints ``str(err)`` on one line and exits with code 2."""

    exit_code = 2


class DivergedError(ForecastError):
    """Training whose validation loss was never a finite number: there are no weights worth keeping (a tuning
    trial that diverges is FAILED; a ``forecast train`` run ends FAILED with this line)."""


def check_values(cls: type, values: dict, section: str) -> None:
    """Each value has the kind of its config field's default: true or false for a switch (no truthy strings), an
    integer for an integer, a number for a float, text for a string; a field that defaults to None takes anything
    its dataclass accepts; a field with ``metadata={"min": m}`` takes no less than m. One line that names the key,
    before the dataclass (or anything else) compares it."""
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("checked_by_post_init")]
    defaults = {f.name: f.default for f in fields}
    lowest = {f.name: f.metadata["min"] for f in fields if "min" in f.metadata}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "text"
        else:
            continue
        if not ok:
            raise ForecastError(f"{section}.{key} must be {kind}, got {value!r}.")
        if key in lowest and not value >= lowest[key]:
            raise ForecastError(f"{section}.{key} must be >= {lowest[key]}, got {value!r}.")


def unknown_key(what: str, key: str, known: Iterable[str], rest: str, *, prefix: str = "", where: str = "",
                cutoff: float = 0.6, synonyms: Mapping[str, str] | None = None) -> ForecastError:
    """The one "unknown X" error of the project:
    ``unknown <what> '<prefix><key>'<where>. Did you mean '<prefix>…'? <rest>``.

    The suggestion is ``synonyms[key]`` when that is a known name (a TSLib spelling such as ``pred_len``), else the
    closest known name by difflib at ``cutoff``; ``rest`` says what is valid or where to look.
    """
    known = list(known)
    alias = (synonyms or {}).get(key)
    close = [alias] if alias in known else difflib.get_close_matches(key, known, n=1, cutoff=cutoff)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    return ForecastError(f"unknown {what} '{prefix}{key}'{where}.{hint} {rest}")


def writable_folder(folder: Path, option: str, make: bool = True) -> Path:
    """``folder``, made if missing (``make``; else its absence is the error); one ``error:`` line (ForecastError) when
    it cannot be made or written to. Called before any work, so a long job never ends on a path it could not write."""
    if not make and not folder.is_dir():
        raise ForecastError(f"{option}: the folder '{folder}' does not exist; create it first.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ForecastError(f"{option}: the folder '{folder}' cannot be made ({err.strerror}); give one you can "
                            "write to.") from None
    if not os.access(folder, os.W_OK):
        raise ForecastError(f"{option}: the folder '{folder}' is not writable; give one you can write to.")
    return folder


def stale_store(exc: BaseException) -> ForecastError | None:
    """MLflow's refusal of a store an older MLflow wrote (after an upgrade of MLflow), as one line: back it up and
    upgrade it, as MLflow asks, or start another. Matched by its text, so that nothing here imports MLflow."""
    found = re.search(r"out-of-date database schema \(found version (\w+), but expected (\w+)\)", str(exc))
    if type(exc).__name__ != "MlflowException" or found is None:
        return None
    return ForecastError(f"the MLflow store was written by an older MLflow (schema {found.group(1)}; the installed "
                         f"MLflow reads {found.group(2)}); back it up, then run `mlflow db upgrade <its URI>` (e.g. "
                         "`mlflow db upgrade sqlite:///mlflow.db`), or give another --tracking-uri.")
