"""Forecast accuracy: MAE, RMSE, sMAPE, MASE, interval coverage — one function each, used by the
tests, the CLI and the report alike."""
from __future__ import annotations

import numpy as np

from rnnlab.errors import RnnlabError


def _pair(actual, forecast):
    a, f = np.asarray(actual, dtype=np.float64).ravel(), np.asarray(forecast, dtype=np.float64).ravel()
    if a.shape != f.shape or a.size == 0:
        raise RnnlabError(f"actual and forecast must be non-empty and the same size, got {a.size} and {f.size}")
    return a, f


def mae(actual, forecast) -> float:
    a, f = _pair(actual, forecast)
    return float(np.mean(np.abs(a - f)))


def rmse(actual, forecast) -> float:
    a, f = _pair(actual, forecast)
    return float(np.sqrt(np.mean((a - f) ** 2)))


def smape(actual, forecast) -> float:
    """Symmetric MAPE in percent: ``100 * mean(2|a - f| / (|a| + |f|))`` (0/0 counts as 0)."""
    a, f = _pair(actual, forecast)
    denom = np.abs(a) + np.abs(f)
    ratio = np.divide(2 * np.abs(a - f), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * np.mean(ratio))


def seasonal_naive_scale(train, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast ``y_t = y_{t-m}`` on the training part."""
    train = np.asarray(train, dtype=np.float64)
    m = max(1, int(season))
    if len(train) <= m:
        raise RnnlabError(f"MASE needs more than {m} training points for season {m}, got {len(train)}")
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    if scale == 0:
        raise RnnlabError("MASE is undefined: the training series is constant at its seasonal lag")
    return scale


def mase(actual, forecast, train, season: int) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006): MAE / in-sample seasonal-naive MAE."""
    return mae(actual, forecast) / seasonal_naive_scale(train, season)


def coverage(actual, lower, upper) -> float:
    """Share of actual values inside ``[lower, upper]``."""
    a, lo = _pair(actual, lower)
    _, hi = _pair(actual, upper)
    return float(np.mean((a >= lo) & (a <= hi)))


def all_metrics(actual, forecast, train, season: int, lower=None, upper=None) -> dict:
    out = {"mase": mase(actual, forecast, train, season), "mae": mae(actual, forecast),
           "rmse": rmse(actual, forecast), "smape": smape(actual, forecast), "n": int(np.size(actual))}
    if lower is not None and upper is not None:
        out["coverage80"] = coverage(actual, lower, upper)
    return out
