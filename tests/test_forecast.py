"""Forecasting: windows without leaks, metrics against hand-computed values, bad input, the CLI."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.data.series import Scaler, Series, chronological_split, load_builtin, load_csv, windows
from rnnlab.errors import RnnlabError
from rnnlab.metrics.forecast import coverage, mae, mase, rmse, smape
from rnnlab.tasks import forecast


def test_windows_never_reach_past_their_stop():
    values = np.arange(20.0)
    x, y = windows(values, lookback=4, horizon=3, start=4, stop=12)
    assert x.shape == (6, 4) and y.shape == (6, 3)
    assert y.max() == 11  # the last target is stop-1: nothing from [12, 20) leaks in
    np.testing.assert_array_equal(x[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(y[0], [4, 5, 6])
    assert (x[:, -1] + 1 == y[:, 0]).all()


def test_the_test_part_never_informs_training():
    """Poison the test part: training windows, scaler and transform must not change."""
    series = load_builtin("airpassengers")
    config = forecast.resolve(forecast.Config(dataset="airpassengers"), series)
    split = chronological_split(series, lookback=config.lookback + series.season, horizon=config.horizon)
    poisoned = series.values.copy()
    poisoned[split.val_end:] = 1e9
    a = forecast.Transform(series.values, split.train_end, True, 12, season=12)
    b = forecast.Transform(poisoned, split.train_end, True, 12, season=12)
    assert (a.scaler.mean, a.scaler.std) == (b.scaler.mean, b.scaler.std)
    np.testing.assert_array_equal(a.profile, b.profile)
    za, zb = a.forward(series.values), b.forward(poisoned)
    xa, ya = windows(za, config.lookback, config.horizon, 12 + config.lookback, split.val_end)
    xb, yb = windows(zb, config.lookback, config.horizon, 12 + config.lookback, split.val_end)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_transform_inverse_reconstructs_the_series():
    values = np.exp(np.linspace(1, 3, 60)) + 5 * np.sin(np.arange(60)) + 10
    t = forecast.Transform(values, 40, True, 12)
    z = t.forward(values)
    back = t.inverse(values[:45], z[45:60][None, :])[0]  # 15 steps: past one season, recursively
    np.testing.assert_allclose(back, values[45:60], rtol=1e-9)


def test_seasonal_profile_recovers_a_planted_season_and_round_trips():
    t = np.arange(120)
    planted = np.array([3.0, 1, -1, -3, -2, 0, 2, 4, 1, -1, -2, -2])
    planted -= planted.mean()
    values = 50 + 0.3 * t + planted[t % 12]  # linear trend: the 2 x 12 moving average removes it exactly
    np.testing.assert_allclose(forecast.seasonal_profile(values, 12), planted, atol=1e-9)
    np.testing.assert_allclose(forecast.seasonal_profile(values[:-5], 12), planted, atol=1e-9)  # any phase at the end
    assert np.ptp(np.diff(forecast.Transform(values, 80, False, 0, season=12).forward(values))) < 1e-9  # the trend left
    values = values + np.sin(t / 7.0)  # not seasonal: differencing must not leave a constant (a zero scale)
    for lag in (0, 12):
        tr = forecast.Transform(values, 80, False, lag, season=12)
        back = tr.inverse(values[:91], tr.forward(values)[91:110][None, :])[0]  # an origin at phase 7
        np.testing.assert_allclose(back, values[91:110], rtol=1e-9)
    co2 = forecast.seasonal_profile(load_builtin("co2").values[:300], 12)
    assert abs(co2.sum()) < 1e-9 and co2.argmax() in (1, 2, 3)  # centred; the peak in Apr-Jun (t = 0 is March)
    with pytest.raises(RnnlabError, match="two seasons"):
        forecast.seasonal_profile(values[:20], 12)


def test_sqrt_transform_inverse_and_refusals():
    values = np.abs(100 * np.sin(np.arange(80) / 5.0))  # sunspot-like: non-negative, zeros allowed
    values[7] = 0.0
    for lag in (0, 11):
        t = forecast.Transform(values, 60, False, lag, sqrt=True)
        back = t.inverse(values[:60], t.forward(values)[60:80][None, :])[0]
        np.testing.assert_allclose(back, values[60:80], rtol=1e-9, atol=1e-9)
    assert t.inverse(values[:60], np.full((1, 3), -50.0)).min() >= 0  # a negative root means zero, never negative
    with pytest.raises(RnnlabError, match="non-negative"):
        forecast.Transform(values - 1, 60, False, 0, sqrt=True)


def test_explicit_false_overrides_the_dataset_default():
    """--no-log / --no-difference are choices, not "use the default" (False == 0 once slipped through)."""
    series = load_builtin("airpassengers")
    chosen = forecast.resolve(forecast.Config(dataset="airpassengers", log=False, difference=False), series)
    assert chosen.log is False and chosen.difference is False
    default = forecast.resolve(forecast.Config(dataset="airpassengers"), series)
    assert default.log is True and default.difference is True and default.lookback == 24


def test_window_norm_makes_the_forecast_shift_equivariant():
    import torch

    torch.manual_seed(0)
    model = forecast.QuantileForecaster("gru", 8, 3, window_norm=True)
    x = torch.randn(4, 10, 1)
    with torch.no_grad():
        assert torch.allclose(model(x + 5.0), model(x) + 5.0, atol=1e-5)
    model = forecast.QuantileForecaster("gru", 8, 3, window_norm=True, inputs=3)  # phase channels are not shifted
    x, shift = torch.randn(4, 10, 3), torch.tensor([5.0, 0.0, 0.0])
    with torch.no_grad():
        assert torch.allclose(model(x + shift), model(x) + 5.0, atol=1e-5)
        assert not torch.allclose(model(x + 5.0), model(x) + 5.0, atol=1e-3)


def test_phase_inputs_give_the_position_in_each_season():
    series = load_builtin("taylor")  # a day (48) for the benchmark, a week (336) for the models
    z = np.arange(len(series), dtype=np.float32)
    config = forecast.Config(dataset="taylor", lookback=6, horizon=2, phase=False)
    x, y = forecast.network_windows(z, series, config, 6, 30)
    assert x.shape == (23, 6, 1) and (y[:, 0] == x[:, -1, 0] + 1).all()  # --no-phase: the series only
    x, y = forecast.network_windows(z, series, dataclasses.replace(config, phase=True), 6, 400)
    assert x.shape == (393, 6, 5)
    t = x[..., 0].astype(int)
    np.testing.assert_allclose(x[..., 1], np.sin(2 * np.pi * t / 48), atol=1e-6)
    np.testing.assert_allclose(x[..., 4], np.cos(2 * np.pi * t / 336), atol=1e-6)
    np.testing.assert_allclose(x[0, :, 1:3], x[48, :, 1:3], atol=1e-5)  # a day later: the same daily phase
    assert not np.allclose(x[0, :, 3:], x[48, :, 3:], atol=1e-3)          # but not the same weekly phase


def test_metrics_against_hand_computed_values():
    a, f = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0])
    assert mae(a, f) == pytest.approx(1.0)
    assert rmse(a, f) == pytest.approx(np.sqrt(5 / 3))
    assert smape(a, f) == pytest.approx(100 * (2 / 3 + 0 + 4 / 6) / 3)
    train = np.array([1.0, 3.0, 2.0, 6.0])  # seasonal naive m=2 errors: |2-1|, |6-3| -> scale 2
    assert mase(a, f, train, 2) == pytest.approx(0.5)
    assert coverage(a, [0, 0, 5], [1.5, 3, 6]) == pytest.approx(2 / 3)
    with pytest.raises(RnnlabError, match="constant"):
        mase(a, f, np.ones(5), 1)


def test_baselines_forecast_from_the_past_only():
    values = np.arange(30.0)
    origins = np.array([20, 25])
    np.testing.assert_array_equal(forecast.naive(values, origins, 3), [[19, 19, 19], [24, 24, 24]])
    np.testing.assert_array_equal(forecast.seasonal_naive(values, origins, 5, 3), [[17, 18, 19, 17, 18], [22, 23, 24, 22, 23]])


def test_bad_csv_input(tmp_path):
    text = tmp_path / "text.csv"
    text.write_text("date,value\n2020-01-01,1\n2020-01-02,abc\n")
    with pytest.raises(RnnlabError, match="must hold numbers, got text such as 'abc' at row 3"):
        load_csv(text, "value")
    empty = tmp_path / "nan.csv"
    empty.write_text("date,value\n2020-01-01,\n2020-01-02,\n")
    with pytest.raises(RnnlabError, match="no numeric value at all"):
        load_csv(empty, "value")
    short = tmp_path / "short.csv"
    short.write_text("v\n" + "\n".join(str(i) for i in range(10)) + "\n")
    with pytest.raises(RnnlabError, match="too short"):
        chronological_split(load_csv(short, "v"), lookback=12, horizon=3)
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("v\n1\nNA\n3\n4\n")
    assert load_csv(gaps, "v").values.tolist() == [1, 2, 3, 4]
    with pytest.raises(RnnlabError, match="1 missing values"):
        load_csv(gaps, "v", missing="error")
    with pytest.raises(RnnlabError, match="no column 'x'"):
        load_csv(gaps, "x")


def test_real_series_load_with_their_seasons():
    for name, m, n in [("sunspots", 11, 309), ("nile", 1, 100), ("airpassengers", 12, 144)]:
        s = load_builtin(name)
        assert (s.season, len(s)) == (m, n) and np.isfinite(s.values).all()
    co2 = load_builtin("co2")
    assert co2.filled.sum() == 5 and np.isfinite(co2.values).all()  # 5 empty months interpolated


def test_cli_end_to_end(tmp_path):
    csv = tmp_path / "mine.csv"
    t = np.arange(120)
    noise = np.random.default_rng(0).normal(0, 1.0, len(t))
    csv.write_text("month,sales\n" + "\n".join(f"{i},{100 + 10 * np.sin(2 * np.pi * i / 12) + 0.5 * i + e:.3f}"
                                               for i, e in zip(t, noise)))
    done = subprocess.run([sys.executable, "-m", "rnnlab", "forecast", "--csv", str(csv), "--column", "sales", "--season", "12",
                           "--model", "gru", "--epochs", "20", "--ensemble", "1", "--json", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert set(out["metrics"]) == {"naive", "seasonal_naive", "arima", "ets", "gru"}
    assert out["metrics"]["gru"]["mase"] < out["metrics"]["naive"]["mase"]
    assert (tmp_path / "run" / "forecast.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "rnnlab", "forecast", "--csv", str(csv), "--column", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_resume_after_a_crash_gives_the_uninterrupted_numbers(tmp_path):
    """A run killed after some of its models were written: --resume loads those, trains the rest,
    and ends with the figures of a run that was never interrupted."""
    config = forecast.Config(dataset="nile", model="gru", ensemble=2, epochs=6, patience=3, hidden=8, baselines=False)
    whole = forecast.run(config, tmp_path / "whole")
    crashed = tmp_path / "crashed"
    forecast.run(config, crashed)
    written = sorted((crashed / "models").glob("*.safetensors"))
    assert len(written) == 8  # 2 settings x 2 members x (probe + refit)
    for path in written[4:]:
        path.unlink()  # as if the process died after the first half
    resumed = forecast.run(config, crashed, resume=True)
    assert resumed["metrics"] == whole["metrics"] and resumed["selection"] == whole["selection"]
    broken = written[0]
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated model file: a clear error, not a crash
    with pytest.raises(RnnlabError, match=broken.name):
        forecast.run(config, crashed, resume=True)
