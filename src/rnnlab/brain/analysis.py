"""Analysis of a trained motor network, each a function returning numbers plus a PNG plotter.

* hand paths and speed profiles of the reaches;
* PCA of condition-averaged population activity;
* jPCA (Churchland et al. 2012, Nature 487:51): in the top-6 PC space fit ``dX/dt = X M`` by least
  squares, once with ``M`` unconstrained and once with ``M`` skew-symmetric (pure rotation); R2 of
  each, plus a control with the time order shuffled within each condition;
* fixed and slow points (Sussillo & Barak 2013, Neural Comput 25:626): minimise
  ``q(x) = 0.5 |F(x) - x|^2`` from states along the trajectories, Jacobian eigenvalues of the map;
* directional tuning (Georgopoulos et al. 1982): cosine fit ``r = b0 + b1 cos th + b2 sin th`` per
  unit, preferred direction ``atan2(b2, b1)``;
* an animated GIF of the arm reaching to the 8 targets.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import RnnlabError


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    from rnnlab.runs import save_figure

    return save_figure(fig, path)


# -- movements -------------------------------------------------------------------------------------

def movement_speed(out: dict, trials: dict) -> np.ndarray:
    """Hand speed (m/s) from the go cue to the end of each trial, ``(B, after_go)``."""
    speed = out["speed"].numpy()
    go = trials["go"].numpy()
    n = min(speed.shape[1] - int(go.max()), speed.shape[1])
    if n < 2:
        raise RnnlabError("movement_speed: trials end less than 2 steps after the go cue")
    return np.stack([speed[b, go[b]:go[b] + n] for b in range(speed.shape[0])])


def plot_hand_paths(out: dict, trials: dict, spec, path) -> Path:
    plt = _plt()
    hand = out["hand"].numpy() * 100
    fig, ax = plt.subplots(figsize=(5, 5))
    colors = plt.cm.hsv(np.linspace(0, 1, spec.n_targets, endpoint=False))
    for b in range(hand.shape[0]):
        k = int(trials["target_index"][b])
        ax.plot(hand[b, :, 0], hand[b, :, 1], color=colors[k], lw=0.8, alpha=0.7)
    for k, t in enumerate(trials["target"][:spec.n_targets].numpy() * 100):
        ax.add_patch(plt.Circle(t, 1.0, fill=False, color=colors[int(trials["target_index"][k])], lw=1.5))
    ax.plot(spec.start[0] * 100, spec.start[1] * 100, "k+", ms=10)
    ax.set_aspect("equal")
    ax.set_xlabel("x (cm)")
    ax.set_ylabel("y (cm)")
    ax.set_title("Hand paths, held-out noisy reaches (circles: 1 cm)")
    return _save(fig, path)


def plot_speed_profiles(out: dict, trials: dict, path) -> Path:
    plt = _plt()
    speed = movement_speed(out, trials)
    t = np.arange(speed.shape[1]) * 10
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, speed.T, color="0.6", lw=0.6)
    ax.plot(t, speed.mean(0), "k", lw=2, label="mean")
    ax.set_xlabel("time from go cue (ms)")
    ax.set_ylabel("hand speed (m/s)")
    ax.set_title("Speed profiles")
    ax.legend()
    return _save(fig, path)


# -- population activity ---------------------------------------------------------------------------

def condition_average(rates: Tensor, trials: dict, start: int, stop: int) -> np.ndarray:
    """Rates averaged by target over steps ``go+start .. go+stop-1``: ``(conditions, stop-start, units)``."""
    rates = torch.as_tensor(rates).detach().cpu().numpy()
    go, idx = trials["go"].numpy(), trials["target_index"].numpy()
    if int(go.min()) + start < 0 or int(go.max()) + stop > rates.shape[1]:
        raise RnnlabError(f"window go{start:+d}..go{stop:+d} leaves the trial (go in {go.min()}..{go.max()}, "
                          f"{rates.shape[1]} steps)")
    windows = np.stack([rates[b, go[b] + start:go[b] + stop] for b in range(rates.shape[0])])
    return np.stack([windows[idx == k].mean(0) for k in np.unique(idx)])


def pca(data: np.ndarray, n: int = 10) -> dict:
    """PCA of ``(conditions, time, units)`` activity (mean over conditions and time removed)."""
    x = np.asarray(data, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(0)
    u, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    var = s ** 2 / max((s ** 2).sum(), 1e-300)
    cum = np.cumsum(var)
    n = min(n, vt.shape[0])
    return {"components": vt[:n], "mean": mean, "explained": var[:n], "dims_90": int(np.searchsorted(cum, 0.9) + 1),
            "participation_ratio": float((s ** 2).sum() ** 2 / max((s ** 4).sum(), 1e-300)),
            "projected": ((flat - mean) @ vt[:n].T).reshape(*x.shape[:2], n)}


def plot_pca(result: dict, path) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(np.arange(1, len(result["explained"]) + 1), result["explained"] * 100)
    a.set_xlabel("PC")
    a.set_ylabel("variance explained (%)")
    a.set_title(f"{result['dims_90']} PCs explain 90%")
    proj = result["projected"]
    colors = plt.cm.hsv(np.linspace(0, 1, proj.shape[0], endpoint=False))
    for c in range(proj.shape[0]):
        b.plot(proj[c, :, 0], proj[c, :, 1], color=colors[c])
        b.plot(proj[c, 0, 0], proj[c, 0, 1], "o", color=colors[c], ms=3)
    b.set_xlabel("PC1")
    b.set_ylabel("PC2")
    b.set_title("Condition-averaged trajectories")
    return _save(fig, path)


def _skew_basis(k: int) -> np.ndarray:
    """``(k(k-1)/2, k, k)`` basis of the skew-symmetric matrices."""
    basis = []
    for i in range(k):
        for j in range(i + 1, k):
            m = np.zeros((k, k))
            m[i, j], m[j, i] = 1.0, -1.0
            basis.append(m)
    return np.array(basis)


def _r2(dx: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - ((dx - pred) ** 2).sum() / max(((dx - dx.mean(0)) ** 2).sum(), 1e-300))


def jpca_fit(x: np.ndarray, dx: np.ndarray) -> dict:
    """Least-squares ``dx = x M``: unconstrained and skew-symmetric ``M``; ``x, dx`` are ``(samples, k)``."""
    k = x.shape[1]
    m_full = np.linalg.lstsq(x, dx, rcond=None)[0]
    basis = _skew_basis(k)
    design = np.stack([(x @ b).ravel() for b in basis], 1)           # vec(x B_i)
    coef = np.linalg.lstsq(design, dx.ravel(), rcond=None)[0]
    m_skew = np.tensordot(coef, basis, 1)
    return {"M_full": m_full, "M_skew": m_skew, "r2_full": _r2(dx, x @ m_full), "r2_skew": _r2(dx, x @ m_skew)}


def _jpca_prepare(data: np.ndarray, n_pcs: int, soft_norm: float):
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 3:
        raise RnnlabError(f"jpca expects (conditions, time >= 3, units) activity, got shape {x.shape}")
    rng = x.max((0, 1)) - x.min((0, 1))
    x = x / (rng + soft_norm)                     # soft normalisation (Churchland et al. 2012)
    x = x - x.mean(0, keepdims=True)              # remove the cross-condition mean at each time
    flat = x.reshape(-1, x.shape[-1])
    _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    k = min(n_pcs, vt.shape[0])
    return (x - flat.mean(0)) @ vt[:k].T, vt[:k]


def jpca(data: np.ndarray, n_pcs: int = 6, soft_norm: float = 0.1) -> dict:
    """jPCA of condition-averaged activity ``(conditions, time, units)``.

    Returns R2 of the skew-symmetric and unconstrained linear dynamics fits, ``M_skew``, the
    projection onto the first jPC plane (the plane of fastest rotation) and the PCs.
    """
    proj, pcs = _jpca_prepare(data, n_pcs, soft_norm)
    x = 0.5 * (proj[:, 1:] + proj[:, :-1])        # midpoints, so dx and x line up in time
    dx = np.diff(proj, axis=1)
    fit = jpca_fit(x.reshape(-1, x.shape[-1]), dx.reshape(-1, dx.shape[-1]))
    evals, evecs = np.linalg.eig(fit["M_skew"])
    top = int(np.argmax(np.abs(evals.imag)))
    v = evecs[:, top]
    plane, _ = np.linalg.qr(np.stack([v.real, v.imag], 1))   # the plane of the fastest rotation
    return {**fit, "pcs": pcs, "projected": proj, "plane": plane, "jplane": proj @ plane,
            "frequency_hz_per_step": float(np.abs(evals.imag).max() / (2 * math.pi))}


def jpca_shuffled(data: np.ndarray, n_pcs: int = 6, soft_norm: float = 0.1, seed: int = 0) -> dict:
    """Control: the same fits after shuffling the time order within each condition (same permutation for all units)."""
    x = np.asarray(data, dtype=np.float64)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([c[rng.permutation(c.shape[0])] for c in x])
    return jpca(shuffled, n_pcs, soft_norm)


def plot_jpca(result: dict, path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    proj = result["jplane"]
    colors = plt.cm.coolwarm(np.linspace(0, 1, proj.shape[0]))
    order = np.argsort(proj[:, 0, 0])
    for i, c in enumerate(order):
        ax.plot(proj[c, :, 0], proj[c, :, 1], color=colors[i])
        ax.annotate("", xy=proj[c, -1], xytext=proj[c, -2], arrowprops={"arrowstyle": "->", "color": colors[i]})
    ax.set_xlabel("jPC1")
    ax.set_ylabel("jPC2")
    ax.set_title(f"jPCA: R2 skew {result['r2_skew']:.2f}, full {result['r2_full']:.2f}")
    return _save(fig, path)


# -- fixed points ----------------------------------------------------------------------------------

def network_map(model, task_input: Tensor):
    """The network's one-step map ``x -> x'`` with the given task input ``(N, 3)`` per state and the arm's
    feedback at rest (start posture, no noise)."""
    from rnnlab.brain.reaching import TASK_INPUTS

    cell = model.cell
    q = model.q0.expand(task_input.shape[0], 2)
    a = model.arm.rest_activation(q)
    fb = torch.cat([q - model.q0, torch.zeros_like(q), a, torch.zeros_like(q)], -1)
    drive = (F.linear(task_input, cell.weight_ih[:, :TASK_INPUTS], cell.bias)
             + F.linear(fb, cell.weight_ih[:, TASK_INPUTS:])).detach()
    w = cell.recurrent_weight().detach()
    f = __import__("rnnlab.cells", fromlist=["activation_fn"]).activation_fn(cell.activation)
    alpha = cell.alpha

    def step(x: Tensor) -> Tensor:
        return (1 - alpha) * x + alpha * (F.linear(f(x), w) + drive)

    return step


def preparatory_states(out: dict, trials: dict, steps: int = 10) -> tuple[Tensor, Tensor]:
    """Task inputs at the step before the go cue and the states of the last ``steps`` steps before it:
    starting points for the fixed-point search of the preparatory (delay-period) dynamics."""
    go = trials["go"]
    if int(go.min()) < steps:
        raise RnnlabError(f"preparatory_states needs go >= {steps} steps, got go = {int(go.min())}")
    inputs, states = [], []
    for b in range(go.shape[0]):
        g = int(go[b])
        inputs.append(trials["inputs"][b, g - 1].expand(steps, -1))
        states.append(out["states"][b, g - steps:g])
    return torch.cat(inputs), torch.cat(states)


def find_fixed_points(step, x0: Tensor, iters: int = 1500, lr: float = 0.05, tol: float = 1e-8,
                      slow_tol: float = 1e-4, seed: int = 0) -> dict:
    """Minimise ``q(x) = 0.5 |F(x) - x|^2`` (per state) from the initial states ``x0 (N, H)``.

    Returns the states with ``q < tol`` (fixed points, near-duplicates merged) and ``q < slow_tol``
    (slow points), each point's ``q``, and the eigenvalues of the map's Jacobian at the fixed points.
    """
    torch.manual_seed(seed)
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=lr * 1e-3)
    for _ in range(iters):
        q = 0.5 * (step(x) - x).pow(2).sum(-1)
        opt.zero_grad()
        q.sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        q = 0.5 * (step(x) - x).pow(2).sum(-1)
    x = x.detach()
    slow = x[q < slow_tol]
    fixed, fixed_q = [], []
    for i in torch.argsort(q).tolist():
        if q[i] >= tol:
            break
        if all((x[i] - p).norm() > 1e-3 * (1 + p.norm()) for p in fixed):
            fixed.append(x[i])
            fixed_q.append(float(q[i]))
    eigs = []
    for p in fixed:
        jac = torch.autograd.functional.jacobian(lambda v: step(v.unsqueeze(0))[0], p)
        eigs.append(torch.linalg.eigvals(jac).numpy())
    return {"points": torch.stack(fixed) if fixed else x.new_zeros(0, x.shape[1]), "q": fixed_q,
            "slow_points": slow, "all_q": q, "eigenvalues": eigs,
            "max_abs_eig": float(max((np.abs(e).max() for e in eigs), default=float("nan")))}


def plot_fixed_points(result: dict, trajectories: np.ndarray, path) -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    b.plot(circle.real, circle.imag, "k:", lw=0.8)
    for e in result["eigenvalues"]:
        b.plot(e.real, e.imag, ".", ms=3)
    b.set_aspect("equal")
    b.set_title("Jacobian eigenvalues at the fixed points")
    b.set_xlabel("Re")
    b.set_ylabel("Im")
    a.semilogy(np.sort(result["all_q"].numpy()), ".")
    a.axhline(1e-8, color="r", lw=0.8, label="fixed (q < 1e-8)")
    a.axhline(1e-4, color="orange", lw=0.8, label="slow (q < 1e-4)")
    a.set_xlabel("optimised state (sorted)")
    a.set_ylabel("q = |F(x) - x|^2 / 2")
    a.legend()
    a.set_title(f"{len(result['points'])} fixed points, {len(result['slow_points'])} slow points")
    return _save(fig, path)


# -- tuning ----------------------------------------------------------------------------------------

def tuning_rates(rates: Tensor, trials: dict, start: int = 5, stop: int = 30) -> np.ndarray:
    """Each trial's mean rate per unit over ``go+start .. go+stop`` (the reach), ``(B, H)``."""
    rates = torch.as_tensor(rates).detach().numpy()
    go = trials["go"].numpy()
    return np.stack([rates[b, go[b] + start:go[b] + stop].mean(0) for b in range(rates.shape[0])])


def target_angles(trials: dict, spec) -> np.ndarray:
    d = trials["target"].numpy() - np.asarray(spec.start)
    return np.arctan2(d[:, 1], d[:, 0])


def directional_tuning(rates: np.ndarray, angles: np.ndarray, r2_threshold: float = 0.7) -> dict:
    """Cosine tuning of each unit: least squares ``r = b0 + b1 cos th + b2 sin th`` on direction-averaged rates."""
    rates, angles = np.asarray(rates, dtype=np.float64), np.asarray(angles, dtype=np.float64)
    if rates.ndim != 2 or angles.shape != (rates.shape[0],):
        raise RnnlabError(f"directional_tuning expects rates (trials, units) and angles (trials,), got "
                          f"{rates.shape} and {angles.shape}")
    keys = np.round(angles, 6)
    dirs = np.unique(keys)
    if len(dirs) < 3:
        raise RnnlabError(f"directional tuning needs >= 3 movement directions, got {len(dirs)}")
    mean = np.stack([rates[keys == d].mean(0) for d in dirs])
    design = np.stack([np.ones_like(dirs), np.cos(dirs), np.sin(dirs)], 1)
    coef, *_ = np.linalg.lstsq(design, mean, rcond=None)
    pred = design @ coef
    sst = ((mean - mean.mean(0)) ** 2).sum(0)
    r2 = np.where(sst > 1e-12, 1 - ((mean - pred) ** 2).sum(0) / np.maximum(sst, 1e-300), 0.0)
    depth = np.hypot(coef[1], coef[2])
    return {"preferred": np.arctan2(coef[2], coef[1]), "depth": depth, "r2": r2, "baseline": coef[0],
            "directions": dirs, "mean": mean,
            "tuned_fraction": float(np.mean((r2 > r2_threshold) & (depth > 1e-3)))}


def plot_tuning(result: dict, path, title: str = "Directional tuning") -> Path:
    plt = _plt()
    fig = plt.figure(figsize=(10, 4))
    a = fig.add_subplot(1, 2, 1, projection="polar")
    tuned = result["r2"] > 0.7
    a.hist(result["preferred"][tuned], bins=16)
    a.set_title(f"preferred directions ({tuned.sum()} of {len(tuned)} units with cosine R2 > 0.7)", fontsize=9)
    b = fig.add_subplot(1, 2, 2)
    b.hist(result["r2"], bins=20, range=(0, 1))
    b.set_xlabel("cosine fit R2")
    b.set_ylabel("units")
    fig.suptitle(title)
    return _save(fig, path)


# -- animation -------------------------------------------------------------------------------------

def animate_reaches(out: dict, trials: dict, model, path, every: int = 2) -> Path:
    """An animated GIF (matplotlib + pillow) of the arm reaching to each of the 8 targets at once."""
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter

    spec = model.spec
    first = [int(np.flatnonzero(trials["target_index"].numpy() == k)[0]) for k in range(spec.n_targets)]
    hand = out["hand"][first]
    q = model.arm.inverse_kinematics(hand.reshape(-1, 2)).reshape(len(first), -1, 2).numpy()
    l1, l2 = model.arm.p.l1, model.arm.p.l2
    elbow = np.stack([l1 * np.cos(q[..., 0]), l1 * np.sin(q[..., 0])], -1)
    hand = hand.numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    colors = plt.cm.hsv(np.linspace(0, 1, len(first), endpoint=False))
    for k, b in enumerate(first):
        t = trials["target"][b].numpy()
        ax.add_patch(plt.Circle(t, 0.01, fill=False, color=colors[k]))
    lines = [ax.plot([], [], "-o", color=colors[k], lw=1.5, ms=3)[0] for k in range(len(first))]
    label = ax.text(0.02, 0.95, "", transform=ax.transAxes)
    ax.set_xlim(-0.35, 0.35)
    ax.set_ylim(-0.05, 0.65)
    ax.set_aspect("equal")
    ax.set_title("Reaching to 8 targets (each arm one reach)")
    go = trials["go"][first].numpy()

    def draw(t):
        for k, line in enumerate(lines):
            line.set_data([0, elbow[k, t, 0], hand[k, t, 0]], [0, elbow[k, t, 1], hand[k, t, 1]])
        label.set_text(f"t = {t * 10} ms (go at {go.min() * 10}-{go.max() * 10} ms)")
        return lines

    anim = FuncAnimation(fig, draw, frames=range(0, hand.shape[1], every), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=20))
    plt.close(fig)
    return path
