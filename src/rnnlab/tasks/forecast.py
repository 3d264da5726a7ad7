"""``rnnlab forecast``: forecast a real series with SimpleRNN / LSTM / GRU against naive, seasonal
naive, auto-ARIMA and ETS, all scored by the same rolling-origin backtest.

The path: series (from statsmodels / pmdarima, or a CSV) -> chronological split (train /
validation / test = last 20%) -> transform fitted on the training part only (optional log or sqrt,
optional removal of the seasonal profile, differencing at the seasonal lag, standardisation) ->
windows of ``lookback`` inputs and ``horizon`` targets -> a recurrent network with a quantile head
(10%, 50%, 90%) trained with the pinball loss, early-stopped on validation; with ``--select``
(default) the configured transform and the alternatives of ``candidates`` (undifferenced and
window-normalised, with and without the seasonal profile) are all trained and the one with the
lower MASE on the validation part is kept (per cell) -> the kept setting refitted on train+validation -> intervals
calibrated on validation (conformalised quantiles) -> rolling origins over the test part, stride =
horizon -> MAE, RMSE, sMAPE, MASE, 80% coverage for every model -> table, JSON, PNG.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import rnnlab
from rnnlab.data.series import (DATASETS, Scaler, Series, backtest_origins, chronological_split, load_builtin,
                                load_csv, windows)
from rnnlab.errors import RnnlabError
from rnnlab.metrics.forecast import all_metrics, mase
from rnnlab.runs import new_run_dir, print_table, save_figure, write_config, write_metrics
from rnnlab.train import EarlyStopping, Trainer, seed_everything
from rnnlab.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint

QUANTILES = (0.1, 0.5, 0.9)
CELLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}

# Per-dataset settings a forecaster would choose by looking at the series: horizon as in the
# benchmark, a lookback of a few seasons, log for multiplicative seasonality, differencing at the
# seasonal lag for trending or strongly seasonal series.
DEFAULTS = {
    # sunspots: counts whose spread grows with the cycle's height; the square root (the classic
    # variance-stabilising transform for counts) makes errors alike at small and large cycles
    "sunspots": {"horizon": 11, "lookback": 44, "log": False, "difference": False, "sqrt": True},
    "co2": {"horizon": 12, "lookback": 36, "log": False, "difference": True},
    "nile": {"horizon": 5, "lookback": 15, "log": False, "difference": False},
    "airpassengers": {"horizon": 12, "lookback": 24, "log": True, "difference": True},
    # taylor: 4032 half-hours make ~2400 training windows; fewer epochs keep it to minutes
    "taylor": {"horizon": 48, "lookback": 96, "log": False, "difference": True, "epochs": 30, "patience": 6,
               "ensemble": 1},
}


@dataclass
class Config:
    dataset: str = "sunspots"
    csv: str | None = None
    column: str | None = None
    date_column: str | None = None
    season: int = 1                 # for --csv
    missing: str = "interpolate"
    model: str = "all"              # rnn, lstm, gru or all (all also reports their ensemble)
    horizon: int = 0                # 0: the dataset's default
    lookback: int = 0               # 0: the dataset's default
    log: bool | None = None         # None: the dataset's default
    sqrt: bool | None = None        # square-root transform (counts); None: the dataset's default
    difference: bool | None = None  # None: the dataset's default
    hidden: int = 32
    epochs: int = 150
    patience: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    ensemble: int = 3
    window_norm: bool = False       # subtract each input window's mean (see QuantileForecaster)
    deseason: bool = False          # subtract the training part's seasonal profile (see seasonal_profile)
    phase: bool = True              # also give the network where in each season a point lies (see network_inputs)
    select: bool = True             # also try the candidates(); keep the lower validation MASE
    baselines: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_series(config: Config) -> Series:
    if config.csv:
        return load_csv(config.csv, config.column, config.date_column, config.season, config.missing)
    return load_builtin(config.dataset, config.missing)


def resolve(config: Config, series: Series) -> Config:
    """Fill the 0/None settings with the dataset's defaults."""
    d = DEFAULTS.get(series.name, {"horizon": max(1, series.season), "lookback": max(12, 3 * series.season),
                                   "log": False, "difference": series.season > 1})
    # None (and 0 for the integer fields) means "the dataset's default"; False is a choice (--no-log)
    pick = lambda v, k: d[k] if v is None or (v == 0 and not isinstance(v, bool)) else v  # noqa: E731
    config = dataclasses.replace(config, horizon=pick(config.horizon, "horizon"), lookback=pick(config.lookback, "lookback"),
                                 log=pick(config.log, "log"), difference=pick(config.difference, "difference"),
                                 sqrt=bool(d.get("sqrt", False)) if config.sqrt is None else config.sqrt)
    if config.log and config.sqrt:
        raise RnnlabError("choose one of --log and --sqrt, not both")
    if config.phase and not phase_periods(series, config):  # no season (nile): nothing to give, say so in names
        config = dataclasses.replace(config, phase=False)
    if config.epochs == Config.epochs and "epochs" in d:  # dataset-specific budget unless the user chose one
        config = dataclasses.replace(config, epochs=d["epochs"], patience=d.get("patience", config.patience),
                                     ensemble=d.get("ensemble", config.ensemble))
    return config


def seasonal_profile(z: np.ndarray, m: int) -> np.ndarray:
    """The additive seasonal indices of classical decomposition: ``z`` minus its centred moving
    average over one season (a 2 x m average for even m), averaged by phase ``t mod m`` and centred
    to sum to zero. ``profile[t % m]`` is the seasonal part of point ``t``."""
    weights = np.ones(m + 1 - m % 2)
    if m % 2 == 0:
        weights[0] = weights[-1] = 0.5
    weights /= m
    half = len(weights) // 2
    if len(z) < len(weights) + m:
        raise RnnlabError(f"deseasonalising needs at least two seasons ({len(weights) + m} points) before the "
                          f"validation part, got {len(z)}; use --no-deseason")
    detrended = z[half:len(z) - half] - np.convolve(z, weights, mode="valid")
    phase = np.arange(half, len(z) - half) % m
    profile = np.array([detrended[phase == k].mean() for k in range(m)])
    return profile - profile.mean()


class Transform:
    """log or sqrt (optional) -> minus a seasonal profile (optional) -> difference at lag m (optional)
    -> standardise. Everything is fitted on the training part only."""

    def __init__(self, values: np.ndarray, fit_end: int, log: bool, lag: int, sqrt: bool = False, season: int = 0):
        if log and (values[:fit_end] <= 0).any():
            raise RnnlabError("log transform needs a positive series; use --no-log")
        if sqrt and (values[:fit_end] < 0).any():
            raise RnnlabError("sqrt transform needs a non-negative series; use --no-sqrt")
        self.log, self.sqrt, self.lag = log, sqrt, lag
        self.profile = seasonal_profile(self._root(values[:fit_end]), season) if season > 1 else None
        z = self._pre(values)
        self.scaler = Scaler(z[lag:fit_end] if lag else z[:fit_end])

    def _root(self, values):
        return np.log(values) if self.log else np.sqrt(values) if self.sqrt else np.asarray(values, dtype=np.float64)

    def _season(self, start: int, count: int) -> np.ndarray:
        """The seasonal part of points ``start .. start + count - 1`` (zero without a profile)."""
        if self.profile is None:
            return np.zeros(count)
        return self.profile[np.arange(start, start + count) % len(self.profile)]

    def _pre(self, values):
        z = self._root(values) - self._season(0, len(values))
        if self.lag:
            d = np.full_like(z, np.nan)
            d[self.lag:] = z[self.lag:] - z[:-self.lag]
            return d
        return z

    def forward(self, values):
        return self.scaler(self._pre(values))

    def inverse(self, history: np.ndarray, scaled_future: np.ndarray) -> np.ndarray:
        """Forecasts on the original scale from the history before the origin and scaled outputs (..., h)."""
        d = self.scaler.inverse(scaled_future)
        base = self._root(history) - self._season(0, len(history))
        if self.lag:  # z_{o+k} = z_{o+k-m} + d_{o+k}: from the history, then from earlier forecasts
            m, z = self.lag, np.empty_like(d)
            for k in range(d.shape[-1]):
                z[..., k] = (base[len(base) - m + k] if k < m else z[..., k - m]) + d[..., k]
        else:
            z = d
        z = z + self._season(len(history), d.shape[-1])
        if self.sqrt:
            return np.square(np.maximum(z, 0.0))  # a negative root means zero (monotone: quantiles keep order)
        return np.exp(z) if self.log else z


def make_transform(series: Series, config: Config, fit_end: int) -> Transform:
    """The transform ``config`` asks for, fitted on ``series.values[:fit_end]``."""
    m = series.long_season
    return Transform(series.values, fit_end, config.log, m if config.difference else 0, config.sqrt,
                     season=m if config.deseason else 0)


def phase_periods(series: Series, config: Config) -> list[int]:
    """The seasonal periods whose phase the network reads (none without ``config.phase``)."""
    return sorted({series.season, series.long_season} - {0, 1}) if config.phase else []


def network_inputs(z: np.ndarray, index: np.ndarray, series: Series, config: Config) -> np.ndarray:
    """What the network reads at time indices ``index`` (windows, ``(N, lookback)``): the transformed
    series ``z``, then with ``config.phase`` the sine and cosine of ``2 pi t / m`` for each seasonal
    period m of the series (time features, as DeepAR's), so the network need not infer from the
    window's shape where in its year, day or week the forecast starts. ``(N, lookback, channels)``."""
    channels = [z[index]]
    for m in phase_periods(series, config):
        angle = (2 * np.pi / m) * index
        channels += [np.sin(angle), np.cos(angle)]
    return np.stack(channels, axis=-1).astype(np.float32)


def network_windows(z: np.ndarray, series: Series, config: Config, start: int, stop: int):
    """Every training pair with its origin in ``[start, stop - horizon]`` (see ``windows``):
    ``network_inputs`` of the lookback and the next ``horizon`` values of ``z``."""
    index_x, index_y = windows(np.arange(len(z)), config.lookback, config.horizon, start, stop)
    return network_inputs(z, index_x, series, config), z[index_y]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class QuantileForecaster(nn.Module):
    """Recurrent encoder of the lookback window -> (horizon, 3 quantiles) from the last state."""

    def __init__(self, cell: str, hidden: int, horizon: int, window_norm: bool = False, inputs: int = 1):
        super().__init__()
        self.rnn = CELLS[cell](inputs, hidden)
        self.head = nn.Linear(hidden, horizon * len(QUANTILES))
        self.horizon, self.window_norm = horizon, window_norm

    def forward(self, x):
        # window_norm: the network sees the window minus its mean and forecasts the deviation from it
        # (the shift half of RevIN, Kim et al. 2022), so a level never seen in training (co2's growth
        # rate rising decade after decade) does not push the inputs out of the range it learned.
        # Channel 0 is the series; any others are phase features, which are never shifted.
        level = x[..., :1].mean(dim=1, keepdim=True) if self.window_norm else None
        if level is not None:
            x = torch.cat([x[..., :1] - level, x[..., 1:]], dim=-1)
        out, _ = self.rnn(x)
        q = self.head(out[:, -1]).view(-1, self.horizon, len(QUANTILES))
        if level is not None:
            q = q + level
        # sort so quantiles never cross
        return torch.sort(q, dim=-1).values


def pinball_loss(pred, target):
    """Mean quantile (pinball) loss over horizon and quantiles."""
    q = torch.tensor(QUANTILES, dtype=pred.dtype).view(1, 1, -1)
    err = target.unsqueeze(-1) - pred
    return torch.maximum(q * err, (q - 1) * err).mean()


@dataclass
class ModelStore:
    """Where the run's trained models go, one file each, written as each finishes: with ``resume`` a
    model whose file exists is loaded instead of trained again, so a killed ``rnnlab forecast`` run
    continues where it stopped and ends with the numbers an uninterrupted run gives (every model is
    trained from its own seed)."""
    folder: Path | None = None   # None: keep nothing
    resume: bool = False

    def path(self, name: str):
        return None if self.folder is None else self.folder / "models" / f"{name}.safetensors"


def _fit(cell, config, x, y, epochs, seed, val=None, callbacks=(), store: ModelStore = ModelStore(), name: str = ""):
    path = store.path(name) if name else None
    if path is not None and store.resume and path.is_file():
        state = load_checkpoint(path)
        model = QuantileForecaster(cell, config.hidden, config.horizon, config.window_norm, x.shape[-1])
        load_model_weights(model, state["model"], path)
        return model, int(state["best_epoch"]), state["val_loss"]
    seed_everything(seed)
    model = QuantileForecaster(cell, config.hidden, config.horizon, config.window_norm, x.shape[-1])
    trainer = Trainer(model, pinball_loss, learning_rate=config.learning_rate, clipnorm=1.0, seed=seed,
                      callbacks=list(callbacks))
    stopper = None
    if val is not None:
        stopper = EarlyStopping(patience=config.patience, restore_best_weights=True)
        trainer.callbacks.append(stopper)
    trainer.fit(x, y, epochs=epochs, batch_size=config.batch_size, validation_data=val, verbose=0)
    best_epoch = (stopper.best_epoch + 1) if stopper is not None else epochs
    val_loss = float(stopper.best) if stopper is not None else None
    if path is not None:
        save_checkpoint(path, {"model": model.state_dict(), "best_epoch": best_epoch, "val_loss": val_loss})
    return model, best_epoch, val_loss


def train_rnn(cell: str, series: Series, config: Config, split, transform: Transform, callbacks=(),
              store: ModelStore = ModelStore()):
    """Early-stop on validation, refit on train+validation for that many epochs; an ensemble of seeds.

    Returns ``(models, probes, val_scores, val_loss)``: ``probes`` are the members trained on the
    training part only (they forecast the validation part), ``val_scores`` conformity scores on
    validation, ``val_loss`` the members' mean best validation pinball loss.
    """
    z = transform.forward(series.values).astype(np.float32)
    start = transform.lag
    xt, yt = network_windows(z, series, config, start + config.lookback, split.train_end)
    xv, yv = network_windows(z, series, config, split.train_end, split.val_end)
    xa, ya = network_windows(z, series, config, start + config.lookback, split.val_end)
    models, probes, val_preds, val_losses = [], [], [], []
    tag = f"{cell}-{variant_name(config)}"
    for member in range(config.ensemble):
        seed = config.seed * 100 + member
        probe, best_epoch, val_loss = _fit(cell, config, xt, yt, config.epochs, seed, (xv, yv),
                                           callbacks, store, f"{tag}-{member}-probe")
        with torch.no_grad():
            val_preds.append(probe(torch.from_numpy(xv)).numpy())
        val_losses.append(val_loss)
        probes.append(probe)
        model, _, _ = _fit(cell, config, xa, ya, max(best_epoch, 5), seed, store=store, name=f"{tag}-{member}")
        models.append(model)
    q = np.mean(val_preds, 0)
    # conformity scores of the 80% band on validation (conformalised quantile regression)
    scores = np.maximum(q[..., 0] - yv, yv - q[..., 2]).ravel()
    return models, probes, scores, float(np.mean(val_losses))


def validation_mase(probes, series: Series, config: Config, transform: Transform, split) -> float:
    """MASE of the train-only members over the validation part (rolling origins, stride = horizon):
    what the candidate settings of ``--select`` are compared by, never the test part."""
    origins = np.arange(split.train_end, split.val_end - config.horizon + 1, config.horizon)
    if len(origins) == 0:
        return float("nan")
    median, _, _ = predict_rnn(probes, series, config, transform, origins, 0.0)
    actual = np.stack([series.values[o:o + config.horizon] for o in origins])
    return mase(actual.ravel(), median.ravel(), series.values[:split.train_end], series.season)


def candidates(config: Config, series: Series) -> list[Config]:
    """The settings ``--select`` compares: the configured ones; the undifferenced series with window
    normalisation (trend and level handled by the window mean instead of by differencing); and, for a
    seasonal series, the same after removing the training part's seasonal profile (the network then
    only follows the level, as in the hybrid of exponential smoothing and an RNN, Smyl 2020)."""
    if not config.select:
        return [config]
    found = [config, dataclasses.replace(config, difference=False, window_norm=True)]
    if series.long_season > 1:
        found.append(dataclasses.replace(config, difference=False, window_norm=True, deseason=True))
    return [c for i, c in enumerate(found) if c not in found[:i]]  # the configured one may be an alternative


def variant_name(config: Config) -> str:
    """``diff``/``level``, then ``-ds`` (deseasonalised), ``-wn`` (window-normalised) and ``-ph``
    (phase inputs) when set."""
    return (f"{'diff' if config.difference else 'level'}{'-ds' if config.deseason else ''}"
            f"{'-wn' if config.window_norm else ''}{'-ph' if config.phase else ''}")


def predict_rnn(models, series: Series, config: Config, transform: Transform, origins, margin: float):
    z = transform.forward(series.values).astype(np.float32)
    x = network_inputs(z, np.asarray(origins)[:, None] + np.arange(-config.lookback, 0), series, config)
    with torch.no_grad():
        q = np.mean([m(torch.from_numpy(x)).numpy() for m in models], 0)
    q[..., 0] -= margin
    q[..., 2] += margin
    out = np.stack([transform.inverse(series.values[:o], q[i, :, :].T) for i, o in enumerate(origins)])
    return out[:, 1], out[:, 0], out[:, 2]  # median, lower, upper; (origins, horizon)


# ---------------------------------------------------------------------------------------------
# Baselines (same origins, same horizon)
# ---------------------------------------------------------------------------------------------


def naive(values, origins, h):
    return np.stack([np.repeat(values[o - 1], h) for o in origins])


def seasonal_naive(values, origins, h, m):
    m = max(1, m)
    return np.stack([[values[o - m * (k // m + 1) + k] for k in range(h)] for o in origins])


def arima_forecasts(values, fit_end, origins, h, m):
    """auto-ARIMA (pmdarima, stepwise AIC) fitted on the past of the test part, then filtered forward
    to each origin with fixed parameters. Long seasons (m > 12) are differenced at lag m first."""
    import pmdarima as pm
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    lag = m if m > 12 else 0
    series = values[lag:] - values[:-lag] if lag else values
    cut = fit_end - lag
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = dict(seasonal=1 < m <= 12, m=m if 1 < m <= 12 else 1, stepwise=True, suppress_warnings=True,
                      error_action="ignore", max_p=3, max_q=3, max_P=1, max_Q=1)
        try:
            auto = pm.auto_arima(series[:cut], **kwargs)
        except ValueError:  # the unit-root tests can fail on very regular series: difference once, as is usual
            auto = pm.auto_arima(series[:cut], d=1, D=1 if kwargs["seasonal"] else None, **kwargs)
        res = SARIMAX(series[:cut], order=auto.order, seasonal_order=auto.seasonal_order,
                      trend="c" if auto.with_intercept else None).fit(disp=False)
        out = []
        for o in origins:
            f = res.apply(series[:o - lag]).forecast(h)
            if lag:
                f = np.array([values[o - lag + k] for k in range(h)]) + f
            out.append(f)
    return np.stack(out), f"ARIMA{auto.order}{auto.seasonal_order if auto.seasonal_order[3] else ''}"


def ets_forecasts(values, fit_end, origins, h, m):
    """Holt-Winters ETS, configuration chosen by AIC on the past of the test part, parameters kept
    fixed while the filter runs forward to each origin."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    positive = (values[:fit_end] > 0).all()
    seasonal_opts = [None] if m <= 1 else ["add"] + (["mul"] if positive else [])
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trend in (None, "add"):
            for damped in ((False, True) if trend else (False,)):
                for seasonal in seasonal_opts:
                    model = ExponentialSmoothing(values[:fit_end], trend=trend, damped_trend=damped, seasonal=seasonal,
                                                 seasonal_periods=m if seasonal else None, initialization_method="heuristic"
                                                 if seasonal and m > 24 else "estimated")
                    try:
                        fit = model.fit(optimized=True)
                    except (ValueError, np.linalg.LinAlgError):
                        continue
                    if np.isfinite(fit.aic) and (best is None or fit.aic < best[0]):
                        best = (fit.aic, trend, damped, seasonal, fit)
        if best is None:
            raise RnnlabError("ETS could not be fitted to this series")
        _, trend, damped, seasonal, fit = best
        params = {k: fit.params[k] for k in ("smoothing_level", "smoothing_trend", "smoothing_seasonal", "damping_trend")
                  if fit.params.get(k) is not None and np.isfinite(fit.params.get(k))}
        init = {"initial_level": fit.params["initial_level"]}
        if trend:
            init["initial_trend"] = fit.params["initial_trend"]
        if seasonal:
            init["initial_seasonal"] = fit.params["initial_seasons"]
        out = []
        for o in origins:
            again = ExponentialSmoothing(values[:o], trend=trend, damped_trend=damped, seasonal=seasonal,
                                         seasonal_periods=m if seasonal else None, initialization_method="known", **init)
            out.append(again.fit(optimized=False, **params).forecast(h))
    name = f"ETS({'A' if trend else 'N'}{'d' if damped else ''},{ {'add': 'A', 'mul': 'M'}.get(seasonal, 'N') })"
    return np.stack(out), name.replace(" ", "")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _score(actual, forecasts, train, m, lower=None, upper=None):
    mask = ~np.isnan(actual)
    return all_metrics(actual[mask], forecasts[mask], train, m,
                       None if lower is None else lower[mask], None if upper is None else upper[mask])


def run(config: Config, run_dir=None, callbacks=(), resume: bool = False) -> dict:
    series = load_series(config)
    config = resolve(config, series)
    if config.horizon < 1 or config.lookback < 1:
        raise RnnlabError(f"horizon and lookback must be >= 1, got {config.horizon}, {config.lookback}")
    variants = candidates(config, series)
    lag_of = lambda c: series.long_season if c.difference else 0  # noqa: E731
    split = chronological_split(series, lookback=config.lookback + max(map(lag_of, variants)), horizon=config.horizon)
    n, h, m, long_m = len(series), config.horizon, series.season, series.long_season
    origins = backtest_origins(n, split.val_end, h)
    actual = np.full((len(origins), h), np.nan)
    for i, o in enumerate(origins):
        seg = series.values[o:o + h]
        actual[i, :len(seg)] = seg
    past = series.values[:split.val_end]
    results, forecasts, timings = {}, {}, {}

    def add(name, f, lo=None, hi=None):
        forecasts[name] = (f, lo, hi)
        results[name] = _score(actual, f, past, m, lo, hi)

    add("naive", naive(series.values, origins, h))
    add("seasonal_naive", seasonal_naive(series.values, origins, h, m))
    names = {}
    if config.baselines:
        start = time.perf_counter()
        f, names["arima"] = arima_forecasts(series.values, split.val_end, origins, h, long_m)
        add("arima", f)
        timings["arima_s"] = time.perf_counter() - start
        start = time.perf_counter()
        f, names["ets"] = ets_forecasts(series.values, split.val_end, origins, h, long_m)
        add("ets", f)
        timings["ets_s"] = time.perf_counter() - start
    cells = list(CELLS) if config.model == "all" else [config.model]
    trained, selection = {}, {}
    for cell in cells:
        if cell not in CELLS:
            raise RnnlabError(f"--model must be one of {sorted(CELLS)} or all, got {config.model!r}")
        start = time.perf_counter()
        tried = []
        for variant in variants:  # each candidate trained and scored on validation; the test part stays unseen
            transform = make_transform(series, variant, split.train_end)
            models, probes, scores, val_loss = train_rnn(cell, series, variant, split, transform, callbacks,
                                                         ModelStore(run_dir, resume))
            tried.append((validation_mase(probes, series, variant, transform, split), variant, transform, models, scores))
        val_mase, variant, transform, models, scores = min(tried, key=lambda t: (np.nan_to_num(t[0], nan=np.inf)))
        selection[cell] = {"kept": variant_name(variant), "difference": variant.difference,
                           "deseason": variant.deseason, "window_norm": variant.window_norm,
                           "val_mase": {variant_name(v): round(float(vm), 4) for vm, v, *_ in tried}}
        level = min(1.0, np.ceil(0.8 * (len(scores) + 1)) / len(scores))
        margin = float(np.quantile(scores, level))
        f, lo, hi = predict_rnn(models, series, variant, transform, origins, margin)
        add(cell, f, lo, hi)
        trained[cell] = (models[0], variant)
        timings[f"{cell}_s"] = time.perf_counter() - start
    if len(cells) > 1:  # the three cells' quantiles averaged: a cheap, usually better ensemble
        stacked = [forecasts[c] for c in cells]
        add("ensemble", *(np.mean([f[i] for f in stacked], 0) for i in range(3)))
        cells = cells + ["ensemble"]
    best = min(cells, key=lambda c: results[c]["mase"])
    summary = {"dataset": series.name, "horizon": h, "lookback": config.lookback, "season": m, "model_season": long_m,
               "test_points": int(np.sum(~np.isnan(actual))), "origins": len(origins), "best_rnn": best,
               "baseline_names": names, "metrics": results, "selection": selection, "timings": timings}
    if run_dir is not None:
        plot_forecast(series, split, origins, forecasts, best, run_dir / "forecast.png")
        best_cell = min(trained, key=lambda c: results[c]["mase"])
        model, variant = trained[best_cell]
        save_checkpoint(run_dir / "model.safetensors", {
            "model": model.state_dict(), "cell": best_cell,
            "config": dataclasses.asdict(dataclasses.replace(variant, model=best_cell, select=False)),
            "test_start": int(split.val_end)})
    return summary


def plot_forecast(series: Series, split, origins, forecasts, best: str, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    show_from = max(0, split.val_end - 3 * len(series.values[split.val_end:]))
    t = np.arange(n)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(t[show_from:], series.values[show_from:], color="black", lw=1, label="actual")
    ax.axvline(split.val_end, color="gray", ls=":", lw=1)
    h = forecasts[best][0].shape[1]
    idx = np.concatenate([np.arange(o, o + h) for o in origins])
    keep = idx < n
    f, lo, hi = (v.ravel()[keep] for v in forecasts[best])
    ax.fill_between(idx[keep], lo, hi, color="tab:blue", alpha=0.2, label="80% interval")
    ax.plot(idx[keep], f, color="tab:blue", lw=1.2, label=f"{best} (rolling origin)")
    for name, color in (("ets", "tab:orange"), ("arima", "tab:green")):
        if name in forecasts:
            ax.plot(idx[keep], forecasts[name][0].ravel()[keep], color=color, lw=0.9, alpha=0.8, label=name)
    ax.set(title=f"{series.name}: test part, horizon {h}, stride {h}", xlabel="time index", ylabel="value")
    ax.legend(fontsize=8, ncol=5)
    save_figure(fig, path)


def print_results(summary: dict) -> None:
    rows = [{"model": name, **{k: v for k, v in r.items()}} for name, r in summary["metrics"].items()]
    print(f"{summary['dataset']}: horizon {summary['horizon']}, {summary['test_points']} test points, "
          f"{summary['origins']} origins (season {summary['season']})")
    print_table(rows, ["model", "mase", "mae", "rmse", "smape", "coverage80", "n"])
    for cell, chosen in summary.get("selection", {}).items():
        print(f"{cell}: kept {chosen['kept']} (validation MASE {chosen['val_mase']})")


# ---------------------------------------------------------------------------------------------
# Task protocol (rnnlab tune / lr-find) and CLI
# ---------------------------------------------------------------------------------------------


def build(config: Config, callbacks=(), run_dir=None):
    """Trainer + training windows + validation windows for one ``config.model`` (default lstm)."""
    series = load_series(config)
    config = resolve(dataclasses.replace(config, model="lstm" if config.model == "all" else config.model), series)
    lag = series.long_season if config.difference else 0
    split = chronological_split(series, lookback=config.lookback + lag, horizon=config.horizon)
    transform = make_transform(series, config, split.train_end)
    z = transform.forward(series.values).astype(np.float32)
    xt, yt = network_windows(z, series, config, lag + config.lookback, split.train_end)
    xv, yv = network_windows(z, series, config, split.train_end, split.val_end)
    seed_everything(config.seed)
    model = QuantileForecaster(config.model, config.hidden, config.horizon, config.window_norm, xt.shape[-1])
    trainer = Trainer(model, pinball_loss, learning_rate=config.learning_rate, clipnorm=1.0, seed=config.seed,
                      callbacks=list(callbacks), run_dir=run_dir, config=dataclasses.asdict(config))
    return trainer, (xt, yt), (xv, yv)


def objective(config: Config, callbacks=()) -> float:
    """Validation pinball loss of one model (what ``rnnlab tune forecast`` minimises)."""
    trainer, train, val = build(config, callbacks)
    history = trainer.fit(*train, epochs=config.epochs, batch_size=config.batch_size, validation_data=val, verbose=0)
    return float(min(history.history["val_loss"]))


def explain_inputs(checkpoint, input_spec: str | None) -> dict:
    """For ``rnnlab explain forecast``: which past points drove the first forecast step.

    ``--input`` is the origin (an index into the series; default: the start of the test part)."""
    state = load_checkpoint(checkpoint)
    fields = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in state["config"].items() if k in fields})
    series = load_series(config)
    config = resolve(config, series)
    lag = series.long_season if config.difference else 0
    split = chronological_split(series, lookback=config.lookback + lag, horizon=config.horizon)
    model = QuantileForecaster(state["cell"], config.hidden, config.horizon, config.window_norm,
                               1 + 2 * len(phase_periods(series, config)))
    load_model_weights(model, state["model"], checkpoint)
    origin = int(state["test_start"]) if not input_spec else int(input_spec)
    if not config.lookback + lag <= origin <= len(series):
        raise RnnlabError(f"--input must be an origin in [{config.lookback + lag}, {len(series)}], got {origin}")
    z = make_transform(series, config, split.train_end).forward(series.values).astype(np.float32)
    x = torch.from_numpy(network_inputs(z, np.arange(origin - config.lookback, origin)[None], series, config))
    return {"model": model, "forward": lambda inp: model(inp)[:, 0, :], "target": 1, "x": x, "baseline": "mean",
            "inputs": x[..., 0], "step_labels": list(range(origin - config.lookback, origin)),
            "title": f"{series.name}: past points driving the next-step median forecast ({state['cell']})"}


def register(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="forecast a real series: RNN/LSTM/GRU vs naive, seasonal naive, ARIMA, ETS",
                              description=__doc__.split("\n\n")[0],
                              epilog=f"Datasets: {', '.join(DATASETS)}. Example: rnnlab forecast --dataset airpassengers --json",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    from rnnlab.cli import add_config_arguments, add_run_arguments

    add_config_arguments(p, Config)
    p.set_defaults(dataset="sunspots")
    for action in p._actions:
        if action.dest == "dataset":
            action.choices = DATASETS
        if action.dest == "model":
            action.choices = ("all", *CELLS)
    add_run_arguments(p)
    p.set_defaults(func=_main)


def _main(args) -> int:
    from rnnlab.cli import config_from_args

    config = config_from_args(Config, args)
    if args.dry_run:
        config = dataclasses.replace(config, epochs=2, ensemble=1, baselines=False, hidden=8)
    run_dir = new_run_dir("forecast", args.run_dir)
    write_config(run_dir, config)
    summary = run(config, run_dir, resume=args.resume)
    write_metrics(run_dir, summary)
    if args.json:
        print(json.dumps({k: summary[k] for k in ("dataset", "horizon", "metrics", "best_rnn", "test_points")}))
    else:
        print_results(summary)
        print(f"plot: {run_dir / 'forecast.png'}")
    return 0


def demo(run_dir) -> dict:
    """Airpassengers with one small ensemble per cell and every baseline (about a minute)."""
    config = Config(dataset="airpassengers", ensemble=1, epochs=100)
    summary = run(config, run_dir)
    write_config(run_dir, config)
    write_metrics(run_dir, summary["metrics"])
    print_results(summary)
    return {name: round(r["mase"], 3) for name, r in summary["metrics"].items()}
