"""User-facing errors: one line that says what is wrong, where, and how to fix it."""


class ForecastError(Exception):
    """A mistake in the user's input. The CLI prints ``str(err)`` on one line and exits with code 2."""

    exit_code = 2
