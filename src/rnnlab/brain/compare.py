"""The trained network held up against real motor cortex (Dyer et al. 2017 recordings, subject C).

On the movement directions the monkey reached to (4 of the 8; each recorded target's direction is
read from the mean hand velocity of its reaches and matched to the nearest model target):

* directional tuning: fraction of cosine-tuned units and spread of preferred directions, real vs
  model (:func:`rnnlab.brain.analysis.directional_tuning`); with 4 directions a 3-parameter cosine
  fit is lenient, so both sides are scored the same way;
* dimensionality: participation ratio and PCs for 90% variance of the target-averaged activity;
* CCA similarity: the real (square-root spike counts) and model (rates) target-averaged time courses,
  each reduced to its top PCs, and the mean canonical correlation between them; the control pairs
  real targets with the wrong model targets (all other permutations, averaged).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from rnnlab.brain.analysis import directional_tuning, pca
from rnnlab.brain.recordings import load_recording
from rnnlab.errors import RnnlabError


def recorded_directions(split) -> dict[int, float]:
    """Reach direction (rad) of each target label: the angle of its mean hand velocity."""
    out = {}
    for k in np.unique(split.target):
        v = split.velocity[split.target == k].mean(0)
        out[int(k)] = float(np.arctan2(v[1], v[0]))
    return out


def real_population(split, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per reach: mean sqrt spike count ``(reaches, units)``, labels, and target-averaged first ``bins`` bins."""
    segs = [(a, b) for a, b in split.segments if b - a >= bins]
    if not segs:
        raise RnnlabError(f"no recorded reach has >= {bins} bins")
    root = np.sqrt(split.spikes)
    per_reach = np.stack([root[a:b].mean(0) for a, b in segs])
    labels = np.array([int(split.target[a]) for a, _ in segs])
    courses = np.stack([root[a:a + bins] for a, _ in segs])
    averaged = np.stack([courses[labels == k].mean(0) for k in np.unique(labels)])
    return per_reach, labels, averaged


def cca(x: np.ndarray, y: np.ndarray, dims: int) -> np.ndarray:
    """Canonical correlations of ``x (n, p)`` and ``y (n, q)`` after reducing each to ``dims`` PCs."""
    def reduce(a):
        a = a - a.mean(0)
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        return u[:, :dims] * s[:dims]

    qx, _ = np.linalg.qr(reduce(x))
    qy, _ = np.linalg.qr(reduce(y))
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def _resample(course: np.ndarray, bins: int) -> np.ndarray:
    """Linear interpolation of ``(time, units)`` onto ``bins`` equally spaced points."""
    t_old = np.linspace(0, 1, course.shape[0])
    t_new = np.linspace(0, 1, bins)
    return np.stack([np.interp(t_new, t_old, course[:, j]) for j in range(course.shape[1])], 1)


def compare_with_recording(out: dict, trials: dict, spec, data_path, png=None, subject: str = "C",
                           bins: int = 20, dims: int = 6) -> dict:
    """Tuning, dimensionality and CCA of model vs real activity; optionally a PNG. Returns the figures."""
    from rnnlab.brain.analysis import target_angles, tuning_rates

    recording = load_recording(data_path, subject)
    split = recording.train
    dirs = recorded_directions(split)
    model_angles = target_angles(trials, spec)
    ring = np.arctan2(np.sin(2 * np.pi * np.arange(spec.n_targets) / spec.n_targets),
                      np.cos(2 * np.pi * np.arange(spec.n_targets) / spec.n_targets))
    match = {k: int(np.argmin(np.abs(np.angle(np.exp(1j * (ring - a)))))) for k, a in dirs.items()}
    if len(set(match.values())) != len(match):
        raise RnnlabError(f"two recorded targets map to one model target: {match}")

    real_rates, labels, real_avg = real_population(split, bins)
    real_tuning = directional_tuning(real_rates, np.array([dirs[k] for k in labels]))
    idx = trials["target_index"].numpy()
    sel = np.isin(idx, list(match.values()))
    model_rates = tuning_rates(out["rates"], trials)[sel]
    model_tuning = directional_tuning(model_rates, model_angles[sel])

    rates = out["rates"].numpy()
    go = trials["go"].numpy()
    after = rates.shape[1] - int(go.max())
    model_avg = []
    for k in sorted(match):
        rows = np.flatnonzero(idx == match[k])
        mean = np.stack([rates[b, go[b]:go[b] + after] for b in rows]).mean(0)
        model_avg.append(_resample(mean, bins))
    model_avg = np.stack(model_avg)
    d = min(dims, real_avg.shape[0] * bins - 1)
    flat_real, flat_model = real_avg.reshape(-1, real_avg.shape[-1]), model_avg.reshape(-1, model_avg.shape[-1])
    corr = cca(flat_real, flat_model, d)
    controls = []
    for perm in itertools.permutations(range(len(match))):
        if perm == tuple(range(len(match))):
            continue
        controls.append(cca(flat_real, model_avg[list(perm)].reshape(-1, model_avg.shape[-1]), d).mean())
    real_pca, model_pca = pca(real_avg), pca(model_avg)
    result = {
        "real_tuned_fraction": real_tuning["tuned_fraction"], "model_tuned_fraction_same_dirs": model_tuning["tuned_fraction"],
        "real_participation_ratio": real_pca["participation_ratio"], "model_participation_ratio": model_pca["participation_ratio"],
        "real_dims_90": real_pca["dims_90"], "model_dims_90": model_pca["dims_90"],
        "cca_mean": float(corr.mean()), "cca_mean_shuffled_targets": float(np.mean(controls)),
        "cca_dims": int(d), "compared_directions_deg": [round(float(np.degrees(dirs[k])), 1) for k in sorted(dirs)],
    }
    if png is not None:
        plot_comparison(real_tuning, model_tuning, corr, real_pca, model_pca, result, png)
    return result


def plot_comparison(real_tuning, model_tuning, corr, real_pca, model_pca, result, path) -> Path:
    from rnnlab.brain.analysis import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].hist([real_tuning["r2"], model_tuning["r2"]], bins=10, range=(0, 1), label=["real (subject C)", "model"],
               density=True)
    ax[0].set_xlabel("cosine tuning R2")
    ax[0].legend()
    ax[0].set_title("Directional tuning")
    n = min(len(real_pca["explained"]), len(model_pca["explained"]))
    ax[1].plot(np.arange(1, n + 1), np.cumsum(real_pca["explained"][:n]), "o-", label="real")
    ax[1].plot(np.arange(1, n + 1), np.cumsum(model_pca["explained"][:n]), "s-", label="model")
    ax[1].set_xlabel("PCs")
    ax[1].set_ylabel("cumulative variance")
    ax[1].legend()
    ax[1].set_title("Dimensionality (target-averaged)")
    ax[2].bar(np.arange(1, len(corr) + 1), corr)
    ax[2].axhline(result["cca_mean_shuffled_targets"], color="r", ls="--", label="shuffled targets (mean)")
    ax[2].set_xlabel("canonical pair")
    ax[2].set_ylabel("correlation")
    ax[2].legend()
    ax[2].set_title(f"CCA real vs model: mean {result['cca_mean']:.2f}")
    return _save(fig, path)
