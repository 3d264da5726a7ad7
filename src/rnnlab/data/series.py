"""Real time series shipped inside installed packages, and the user's own CSV.

| name | source | frequency | season m | test part |
|---|---|---|---|---|
| sunspots | statsmodels | yearly (1700-2008) | 11 (solar cycle) | last 20% |
| co2 | statsmodels (Mauna Loa, weekly with gaps) | monthly means | 12 | last 20% |
| nile | statsmodels (Aswan flow) | yearly (1871-1970) | 1 | last 20% |
| airpassengers | pmdarima | monthly (1949-1960) | 12 | last 20% |
| taylor | pmdarima (electricity demand) | half-hourly | 48 (a day); models also use 336 (a week) | last 1344 points (4 weeks) |

``season`` is the period of the seasonal-naive forecast and of the MASE scale; ``model_season``
the longest period the models may use (taylor: a day for the benchmark, a week for the models).

Missing values are never propagated silently: ``missing="interpolate"`` fills gaps linearly in
time, ``"error"`` refuses them, naming where they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlab.errors import RnnlabError

MISSING = ("interpolate", "error")


@dataclass
class Series:
    name: str
    values: np.ndarray            # (time,) float64, no NaN
    season: int                   # seasonal period m (1 = none)
    test_size: int                # points held out at the end
    dates: np.ndarray | None = None
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # interpolated points
    model_season: int = 0         # the longest period models exploit (0: same as season)

    @property
    def long_season(self) -> int:
        return self.model_season or self.season

    def __len__(self) -> int:
        return len(self.values)


def _handle_missing(values: np.ndarray, missing: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    if missing not in MISSING:
        raise RnnlabError(f"missing must be one of {MISSING}, got {missing!r}")
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.all():
        raise RnnlabError(f"series {name!r} has no numeric value at all ({len(values)} missing)")
    if bad.any():
        if missing == "error":
            where = np.flatnonzero(bad)[:5].tolist()
            raise RnnlabError(f"series {name!r} has {int(bad.sum())} missing values (first at positions {where}); "
                              f"use missing='interpolate' to fill them")
        idx = np.arange(len(values))
        values = values.copy()
        values[bad] = np.interp(idx[bad], idx[~bad], values[~bad])
    return values, bad


def _test_size(n: int, fraction: float = 0.2) -> int:
    return max(1, int(round(n * fraction)))


def load_builtin(name: str, missing: str = "interpolate") -> Series:
    """One of :data:`DATASETS`, from statsmodels / pmdarima (nothing is downloaded)."""
    if name == "sunspots":
        import statsmodels.api as sm

        df = sm.datasets.sunspots.load_pandas().data
        values, filled = _handle_missing(df["SUNACTIVITY"].to_numpy(), missing, name)
        return Series(name, values, 11, _test_size(len(values)), df["YEAR"].to_numpy().astype(int), filled)
    if name == "co2":
        import statsmodels.api as sm

        weekly = sm.datasets.co2.load_pandas().data["co2"]
        monthly = weekly.resample("MS").mean()  # months with no weekly reading stay NaN
        values, filled = _handle_missing(monthly.to_numpy(), missing, name)
        return Series(name, values, 12, _test_size(len(values)), monthly.index.to_numpy(), filled)
    if name == "nile":
        import statsmodels.api as sm

        df = sm.datasets.nile.load_pandas().data
        values, filled = _handle_missing(df["volume"].to_numpy(), missing, name)
        return Series(name, values, 1, _test_size(len(values)), df["year"].to_numpy().astype(int), filled)
    if name == "airpassengers":
        import pmdarima as pm

        values, filled = _handle_missing(pm.datasets.load_airpassengers(), missing, name)
        return Series(name, values, 12, _test_size(len(values)), None, filled)
    if name == "taylor":
        import pmdarima as pm

        values, filled = _handle_missing(pm.datasets.load_taylor(), missing, name)
        return Series(name, values, 48, 1344, None, filled, model_season=336)
    raise RnnlabError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)} (or --csv PATH)")


DATASETS = ("sunspots", "co2", "nile", "airpassengers", "taylor")


def load_csv(path: str | Path, column: str | None = None, date_column: str | None = None, season: int = 1,
             missing: str = "interpolate", test_fraction: float = 0.2) -> Series:
    """A user's CSV: a date column and one or more value columns (``column`` picks one)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"CSV file {path} does not exist")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise RnnlabError(f"cannot read {path} as CSV: {exc}") from None
    if df.empty:
        raise RnnlabError(f"CSV file {path} has no rows")
    if column is None:
        numeric = [c for c in df.columns if c != date_column and pd.api.types.is_numeric_dtype(df[c])]
        if not numeric:
            raise RnnlabError(f"{path}: no numeric value column among {list(df.columns)}; name one with --column")
        column = numeric[0]
    if column not in df.columns:
        raise RnnlabError(f"{path}: no column {column!r}; columns are {list(df.columns)}")
    raw = df[column]
    converted = pd.to_numeric(raw, errors="coerce")
    text = raw[converted.isna() & raw.notna()]
    if len(text):
        raise RnnlabError(f"{path}: column {column!r} must hold numbers, got text such as {str(text.iloc[0])!r} "
                          f"at row {int(text.index[0]) + 2}")
    values, filled = _handle_missing(converted.to_numpy(dtype=np.float64), missing, f"{path.name}:{column}")
    dates = None
    if date_column is not None:
        if date_column not in df.columns:
            raise RnnlabError(f"{path}: no date column {date_column!r}; columns are {list(df.columns)}")
        dates = pd.to_datetime(df[date_column], errors="coerce").to_numpy()
    return Series(f"{path.stem}:{column}", values, int(season), _test_size(len(values), test_fraction), dates, filled)


# ---------------------------------------------------------------------------------------------
# Splits and windows (no future leaks: everything is computed from the past of each origin)
# ---------------------------------------------------------------------------------------------


@dataclass
class Split:
    train_end: int     # series[:train_end] trains the models
    val_end: int       # series[train_end:val_end] validates them (early stopping, model choice)
    # series[val_end:] is the test part, forecast by the rolling-origin backtest


def chronological_split(series: Series, val_fraction: float = 0.15, lookback: int = 0, horizon: int = 1) -> Split:
    n, test = len(series), series.test_size
    val_end = n - test
    val = max(horizon, int(round(val_end * val_fraction)))
    train_end = val_end - val
    need = lookback + horizon
    if train_end < need + 1:
        raise RnnlabError(
            f"series {series.name!r} is too short: {n} points leave {train_end} for training, but lookback+horizon "
            f"= {need} needs at least {need + 1}; use a shorter --lookback or --horizon"
        )
    return Split(train_end, val_end)


def windows(values: np.ndarray, lookback: int, horizon: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(x, y)`` with ``x = values[t-lookback:t]``, ``y = values[t:t+horizon]`` and
    ``start <= t``, ``t + horizon <= stop``: targets never reach past ``stop``."""
    origins = np.arange(max(start, lookback), stop - horizon + 1)
    if len(origins) == 0:
        raise RnnlabError(f"no window of lookback {lookback} + horizon {horizon} fits in [{start}, {stop})")
    idx_x = origins[:, None] + np.arange(-lookback, 0)[None, :]
    idx_y = origins[:, None] + np.arange(horizon)[None, :]
    return values[idx_x], values[idx_y]


def backtest_origins(n: int, test_start: int, horizon: int) -> np.ndarray:
    """Rolling origins over the test part, stride = horizon (the last may forecast fewer points)."""
    return np.arange(test_start, n, horizon)


class Scaler:
    """Standardisation fitted on the training part only (the test part never informs it)."""

    def __init__(self, train_values: np.ndarray):
        self.mean = float(np.mean(train_values))
        self.std = float(np.std(train_values)) or 1.0

    def __call__(self, values):
        return (values - self.mean) / self.std

    def inverse(self, values):
        return values * self.std + self.mean
