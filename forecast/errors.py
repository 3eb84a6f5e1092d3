"""User-facing errors: one line that says what is wrong, where, and how to fix it."""

import dataclasses
import difflib
from collections.abc import Iterable, Mapping


class ForecastError(Exception):
    """A mistake in the user's input. The CLI prints ``str(err)`` on one line and exits with code 2."""

    exit_code = 2


def check_switches(cls: type, values: dict, section: str) -> None:
    """A config dataclass field whose default is true or false takes only true or false (no truthy strings)."""
    switches = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, bool)}
    for key, value in values.items():
        if key in switches and not isinstance(value, bool):
            raise ForecastError(f"{section}.{key} must be true or false, got {value!r}.")


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
