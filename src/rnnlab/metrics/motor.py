"""The figures of ``rnnlab motor``: one function each, used by the CLI, the tests and the report."""
from __future__ import annotations

import numpy as np
import torch

from rnnlab.errors import RnnlabError


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination averaged over output columns: ``mean_d 1 - SSE_d / SST_d``.

    The decoding literature (Glaser et al. 2020) reports it per velocity component and averages.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[0] < 2:
        raise RnnlabError(f"r2_score expects two (samples >= 2, dims) arrays of one shape, got "
                          f"{y_true.shape} and {y_pred.shape}")
    sse = ((y_true - y_pred) ** 2).sum(0)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    if np.any(sst == 0):
        raise RnnlabError("r2_score: a target column is constant (zero variance), R2 is undefined")
    return float(np.mean(1.0 - sse / sst))


def endpoint_error_cm(hand, target) -> float:
    """Mean hand-to-target distance in cm: ``hand``/``target`` (batch, 2) in metres."""
    hand, target = torch.as_tensor(hand), torch.as_tensor(target)
    if hand.shape != target.shape or hand.shape[-1] != 2:
        raise RnnlabError(f"endpoint_error_cm expects (batch, 2) hand and target, got {tuple(hand.shape)}, {tuple(target.shape)}")
    return float((hand - target).norm(dim=-1).mean() * 100.0)


def speed_peaks(speed, rel_prominence: float = 0.2) -> np.ndarray:
    """Number of peaks per speed profile (batch, time) with prominence >= ``rel_prominence`` x its max.

    The prominence test keeps small ripples (sensor noise, corrections of a few mm/s) from counting
    as extra peaks; a profile that only rises (no fall) still has its one peak at the end.
    """
    from scipy.signal import find_peaks

    speed = np.asarray(speed, dtype=np.float64)
    if speed.ndim != 2:
        raise RnnlabError(f"speed_peaks expects (batch, time) speeds, got shape {speed.shape}")
    counts = []
    for s in speed:
        padded = np.concatenate([[0.0], s, [0.0]])  # edges count as troughs
        peaks, _ = find_peaks(padded, prominence=rel_prominence * max(s.max(), 1e-12))
        counts.append(len(peaks))
    return np.array(counts)


def single_peaked_fraction(speed) -> float:
    """Fraction of reaches whose speed profile has exactly one peak."""
    return float(np.mean(speed_peaks(speed) == 1))
