"""What each column of a series is for: a target, a past covariate or a future covariate (``data.features``).

- **M** (the papers' multivariate setting): every column is a target, forecast from every column.
- **S** (the papers' univariate setting): each target alone, from its own history only.
- **MS**: the targets, from the targets and the past covariates (by default every other column), plus the future
  covariates.

A *past covariate* is observed up to the forecast origin only (load, a sensor); a *future covariate* is known over
the horizon as well (the calendar, a planned price, a weather forecast). ``calendar`` among the future covariates
means the time features of the timestamps, which the thuml-family models read by default as marks.

The model's columns are ordered targets, then past covariates, then future covariates: the network reads the first
two groups over the lookback (``x``), the last over lookback and horizon (``future``), and forecasts the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from forecast.config import DataConfig
from forecast.errors import ForecastError

CALENDAR = "calendar"  # the time features as future covariates


@dataclass(frozen=True)
class Roles:
    features: str  # M | S | MS
    targets: tuple[str, ...]
    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()  # columns of the data known over the horizon
    calendar: bool = False  # the time features are future covariates too
    ignored: tuple[str, ...] = ()  # columns of the data in no role (MS with named past covariates)

    @property
    def columns(self) -> list[str]:
        """The model's columns, in its order: targets, past covariates, future covariates."""
        return [*self.targets, *self.past, *self.future]

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def n_inputs(self) -> int:
        """Columns read over the lookback only: the targets and the past covariates."""
        return len(self.targets) + len(self.past)

    @property
    def has_future(self) -> bool:
        return bool(self.future) or self.calendar

    @property
    def univariate(self) -> bool:
        """S: each target is forecast alone (the network sees one variate at a time)."""
        return self.features == "S"

    @property
    def is_default(self) -> bool:
        """M without covariates: every column a target, as the benchmarks are run."""
        return self.features == "M" and not self.past and not self.has_future

    def describe(self) -> str:
        parts = [f"{self.features}: targets {', '.join(self.targets[:4])}{' ...' if len(self.targets) > 4 else ''}"]
        if self.past:
            parts.append(f"{len(self.past)} past covariates")
        if self.has_future:
            parts.append(f"future covariates {', '.join([*self.future, *([CALENDAR] if self.calendar else [])])}")
        return "; ".join(parts)


def resolve_roles(cfg: DataConfig, columns: list[str], where: str) -> Roles:
    """The roles ``cfg`` asks for among ``columns`` (the data's, in file order); every mistake is one line."""
    calendar = CALENDAR in cfg.future_covariates and CALENDAR not in columns
    future_cols = tuple(c for c in cfg.future_covariates if not (calendar and c == CALENDAR))
    flags = (("--target", cfg.target), ("--past-covariates", cfg.past_covariates),
             ("--future-covariates", future_cols))
    for flag, names in flags:
        for name in names:
            if name not in columns:
                shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
                hint = " (or calendar, the time features)" if flag == "--future-covariates" else ""
                raise ForecastError(f"{flag} names '{name}', which {where} does not have; its columns: {shown}"
                                    f"{hint}.")
    seen: dict[str, str] = {}
    for flag, names in flags:
        for name in names:
            if name in seen:
                raise ForecastError(f"column '{name}' is in both {seen[name]} and {flag}; give each column one role.")
            seen[name] = flag
    covariates = set(cfg.past_covariates) | set(future_cols)
    if cfg.features == "M":
        if cfg.target:
            raise ForecastError("with --features M every column is a target; pick targets with --features MS (from "
                                "covariates too) or --features S (each target alone).")
        targets = tuple(c for c in columns if c not in covariates)
        past = tuple(cfg.past_covariates)
    elif cfg.features == "S":
        if covariates or calendar:
            raise ForecastError("--features S forecasts each target from its own history alone; use --features MS "
                                "to add past or future covariates.")
        targets, past = cfg.target or (columns[-1],), ()
    else:
        rest = [c for c in columns if c not in covariates]
        targets = cfg.target or ((rest[-1],) if rest else ())
        past = cfg.past_covariates or tuple(c for c in columns if c not in targets and c not in future_cols)
    if not targets:
        raise ForecastError(f"every column of {where} is a covariate, so nothing is left to forecast; name fewer "
                            "covariates.")
    used = {*targets, *past, *future_cols}
    return Roles(cfg.features, tuple(targets), tuple(past), future_cols, calendar,
                 tuple(c for c in columns if c not in used))
