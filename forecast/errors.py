"""User-facing errors: one line that says what is wrong, where, and how to fix it."""

import dataclasses


class ForecastError(Exception):
    """A mistake in the user's input. The CLI prints ``str(err)`` on one line and exits with code 2."""

    exit_code = 2


def check_switches(cls: type, values: dict, section: str) -> None:
    """A config dataclass field whose default is true or false takes only true or false (no truthy strings)."""
    switches = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, bool)}
    for key, value in values.items():
        if key in switches and not isinstance(value, bool):
            raise ForecastError(f"{section}.{key} must be true or false, got {value!r}.")
