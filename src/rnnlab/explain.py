"""Which time steps and which inputs drove a recurrent network's output: attributions with Captum.

``rnnlab.explain(model, x)`` returns, for every sample, an attribution per time step and input
feature, computed by one of Captum's methods:

* ``integrated_gradients`` (Sundararajan et al. 2017): the path integral of the gradient from a
  baseline input to ``x``. *Completeness*: the attributions add up to ``f(x) - f(baseline)``; the
  gap (``delta``) is reported and shrinks with ``n_steps``.
* ``gradient_shap`` (Lundberg & Lee 2017): expected gradients over baselines jittered with noise,
  an approximation of SHAP values.
* ``occlusion`` (Zeiler & Fergus 2014): replace one window (default: one time step, all its
  features) by the baseline and measure how the output changes: model-agnostic, no gradients.

The baseline is what "no information" means for the data: ``zeros`` (standardised inputs,
one-hot tokens, embeddings), ``mean`` (each series' own mean: forecasting), ``silence`` (each
feature's minimum over time: the floor of a log-mel spectrogram). Read docs/explain.md for what the
numbers mean and their limits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from rnnlab.errors import RnnlabError

METHODS = ("integrated_gradients", "gradient_shap", "occlusion")
BASELINES = ("zeros", "mean", "silence")


@dataclass
class Explanation:
    attributions: Tensor            # (batch, time, features)
    method: str
    target: Tensor                  # (batch,) output index explained
    baseline: Tensor                # (batch, time, features)
    output: Tensor                  # f(x) at the target, (batch,)
    baseline_output: Tensor         # f(baseline) at the target, (batch,)
    delta: Tensor | None = None     # completeness gap of integrated gradients, (batch,)

    def per_step(self) -> Tensor:
        """Signed attribution of each time step (summed over features), ``(batch, time)``."""
        return self.attributions.sum(-1)

    def per_feature(self) -> Tensor:
        """Signed attribution of each input feature (summed over time), ``(batch, features)``."""
        return self.attributions.sum(1)

    def step_share(self) -> Tensor:
        """Share of the absolute attribution mass carried by each step, ``(batch, time)``; rows sum to 1."""
        mass = self.attributions.abs().sum(-1)
        return mass / mass.sum(-1, keepdim=True).clamp_min(1e-30)

    def relative_delta(self) -> Tensor | None:
        """``|sum(attr) - (f(x) - f(baseline))| / |f(x) - f(baseline)|`` per sample (integrated gradients)."""
        if self.delta is None:
            return None
        return self.delta.abs() / (self.output - self.baseline_output).abs().clamp_min(1e-12)

    def plot(self, path, sample: int = 0, step_labels=None, feature_labels=None, title: str | None = None,
             inputs: Tensor | None = None, extra=None):
        """Heatmap (features x time) of one sample's attributions, with the per-step totals below.

        ``inputs`` (batch, time[, k]) draws the raw input above the totals; ``extra(ax)`` may draw a
        companion panel (e.g. the attention map of a translation).
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnnlab.runs import save_figure

        if not 0 <= sample < self.attributions.shape[0]:
            raise RnnlabError(f"sample must be in [0, {self.attributions.shape[0]}), got {sample}")
        attr = self.attributions[sample].detach().cpu()
        T, F_ = attr.shape
        panels = 2 + (extra is not None) + (inputs is not None)
        fig, axes = plt.subplots(panels, 1, figsize=(max(6, min(16, 0.18 * T + 3)), 2.2 * panels + (0.12 * F_ if F_ > 8 else 0)),
                                 squeeze=False, gridspec_kw={"height_ratios": [3 if F_ > 1 else 1.2] + [1] * (panels - 1)})
        axes = axes[:, 0]
        lim = float(attr.abs().max()) or 1.0
        # A diverging map centred on 0: red pushed the explained output up, blue pushed it down.
        image = axes[0].imshow(attr.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
                               interpolation="nearest")
        fig.colorbar(image, ax=axes[0], pad=0.01, label="attribution")
        axes[0].set(ylabel="input feature", title=title or f"{self.method}: target {int(self.target[sample])}")
        if F_ <= 40:  # integer ticks: a feature is an index, not a continuous coordinate
            labels = feature_labels if feature_labels is not None else range(F_)
            axes[0].set_yticks(range(F_), [str(f) for f in labels], fontsize=7)
        row = 1
        if inputs is not None:
            axes[row].plot(inputs[sample].detach().cpu().numpy())
            axes[row].set(ylabel="input", xlim=(-0.5, T - 0.5))
            row += 1
        axes[row].bar(range(T), self.per_step()[sample].detach().cpu().numpy(), color="slategray")
        axes[row].axhline(0, color="black", linewidth=0.5)
        axes[row].set(ylabel="per step", xlabel="time step", xlim=(-0.5, T - 0.5))
        for ax in axes[:row + 1]:
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # steps are whole numbers
        if step_labels is not None and T <= 60:
            for ax in axes[:row + 1]:
                ax.set_xticks(range(T), [str(s) for s in step_labels], rotation=90, fontsize=7)
        if extra is not None:
            extra(axes[row + 1])
        fig.tight_layout()
        return save_figure(fig, path)


def _output_fn(model: nn.Module | Callable, forward: Callable | None) -> Callable[[Tensor], Tensor]:
    """A function ``x -> (batch, outputs)``: tuples give their first item, sequences their last step."""
    fn = forward or model
    if not callable(fn):
        raise RnnlabError(f"explain needs a model or a forward function, got {type(fn).__name__}")

    def out(x, *args):
        y = fn(x, *args)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if y.dim() == 3:  # a sequence of outputs: the decision is the last step's
            y = y[:, -1]
        if y.dim() == 1:
            y = y.unsqueeze(-1)
        if y.dim() != 2 or y.shape[0] != x.shape[0]:
            raise RnnlabError(f"the model must give (batch, outputs) for {x.shape[0]} samples, got {tuple(y.shape)}; "
                              "pass forward= to pick the output to explain")
        return y

    return out


def make_baseline(x: Tensor, baseline) -> Tensor:
    """The reference input: a tensor, or ``zeros`` / ``mean`` (each sample's mean over time) / ``silence``."""
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
        except RuntimeError:
            raise RnnlabError(f"baseline tensor must broadcast to x {tuple(x.shape)}, got {tuple(baseline.shape)}") from None
    if baseline is None or baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(1, keepdim=True).expand_as(x).clone()
    if baseline == "silence":
        return x.amin(1, keepdim=True).expand_as(x).clone()
    raise RnnlabError(f"baseline must be a tensor or one of {BASELINES}, got {baseline!r}")


def _check_input(x) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = (f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__)
        raise RnnlabError(f"explain expects a float tensor (batch, time, features), got {got} "
                          "(token ids: explain their embeddings through forward=)")
    if 0 in x.shape:
        raise RnnlabError(f"explain expects a non-empty (batch, time, features) tensor, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise RnnlabError(f"x contains {int((~torch.isfinite(x)).sum())} NaN/inf values; attributions would be NaN")
    return x.detach()


def _check_target(target, out: Tensor) -> Tensor:
    batch, outputs = out.shape
    if target is None:  # the predicted class, or the single output
        target = out.argmax(-1) if outputs > 1 else torch.zeros(batch, dtype=torch.long)
    target = torch.as_tensor(target, dtype=torch.long, device=out.device)
    if target.dim() > 1 or target.numel() not in (1, batch):
        raise RnnlabError(f"target must be an int or one index per sample ({batch}), got shape {tuple(target.shape)}")
    target = target.reshape(-1).expand(batch).clone()
    if int(target.max()) >= outputs or int(target.min()) < 0:
        raise RnnlabError(f"target must index the model's {outputs} outputs, got {target.tolist()}")
    return target


def _occlusion_window(x: Tensor, window) -> tuple[int, int]:
    """``(steps, features)`` occluded together; default one step with all its features."""
    steps, features = (1, x.shape[2]) if window is None else window
    features = x.shape[2] if features is None else features
    if not (0 < steps <= x.shape[1] and x.shape[1] % steps == 0 and 0 < features <= x.shape[2] and x.shape[2] % features == 0):
        # Windows tile x without overlap so each one's effect is counted once; a ragged tail
        # would silently get no attribution.
        raise RnnlabError(f"occlusion window (steps, features) must divide x's (time, features) {tuple(x.shape[1:])}, "
                          f"got {(steps, features)}")
    return steps, features


def explain(model, x: Tensor, target: int | Tensor | None = None, method: str = "integrated_gradients",
            baseline="zeros", n_steps: int = 64, n_samples: int = 128, forward: Callable | None = None,
            forward_args: tuple = (), window: tuple[int, int | None] | None = None, seed: int = 0) -> Explanation:
    """Attribution of the ``target`` output of ``model`` to every time step and feature of ``x``.

    Args:
        model: an ``nn.Module`` mapping ``x (batch, time, features)`` to outputs ``(batch, outputs)``
            (a tuple's first item and a sequence's last step are used); may be None with ``forward``.
        x: float inputs ``(batch, time, features)``.
        target: the output index to explain (int, or one per sample); None: the predicted class
            for several outputs, output 0 for one. For a forecaster/regressor: which output.
        method: ``integrated_gradients``, ``gradient_shap`` or ``occlusion``.
        baseline: ``zeros``, ``mean``, ``silence`` or a tensor broadcastable to ``x``.
        n_steps: integration points of integrated gradients (the completeness gap shrinks with it).
        n_samples: random draws of gradient SHAP.
        forward: a function ``x -> (batch, outputs)`` called instead of ``model``: a seq2seq decoder
            step on embedded source tokens, one horizon step of a forecaster, ...
        forward_args: further inputs given to every call as ``forward(x, *forward_args)`` and not
            attributed (a decoder's target prefix, an encoder state). Tensors whose first dimension
            is the batch are repeated along with ``x`` by Captum's batched evaluations, which a
            closure over them would not be.
        window: occlusion window ``(steps, features)``; default ``(1, all features)``.
        seed: the seed of gradient SHAP's random draws (the global RNG is left as it was).
    """
    from captum.attr import GradientShap, IntegratedGradients, Occlusion

    if method not in METHODS:
        raise RnnlabError(f"method must be one of {METHODS}, got {method!r}")
    x = _check_input(x)
    fn = _output_fn(model, forward)
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    if params:
        x = x.to(params[0].device)
    forward_args = tuple(forward_args) if isinstance(forward_args, (tuple, list)) else (forward_args,)
    extra = forward_args or None
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()  # dropout off: the explanation is of the deterministic prediction
    try:
        # cuDNN's RNN backward refuses eval mode; the native kernels give the same gradients.
        with torch.backends.cudnn.flags(enabled=False):
            base = make_baseline(x, baseline)
            with torch.no_grad():
                out, base_out = fn(x, *forward_args), fn(base, *forward_args)
            target = _check_target(target, out)
            delta = None
            if method == "integrated_gradients":
                attr, delta = IntegratedGradients(fn).attribute(x, base, target=target, n_steps=n_steps,
                                                                additional_forward_args=extra,
                                                                return_convergence_delta=True)
            elif method == "gradient_shap":
                attr = _gradient_shap(GradientShap(fn), x, base, target, n_samples, seed, forward_args)
            else:
                steps, features = _occlusion_window(x, window)
                attr = Occlusion(fn).attribute(x, sliding_window_shapes=(steps, features), strides=(steps, features),
                                               baselines=base, target=target, additional_forward_args=extra,
                                               perturbations_per_eval=max(1, min(64, 512 // x.shape[0])))
                attr = attr / (steps * features)  # occlusion gives a window's whole effect to each of its elements
        idx = torch.arange(x.shape[0], device=out.device)
        return Explanation(attr.detach(), method, target, base, out[idx, target].detach(),
                           base_out[idx, target].detach(), None if delta is None else delta.detach())
    finally:
        if was_training:
            model.train()


def _gradient_shap(shap, x: Tensor, base: Tensor, target: Tensor, n_samples: int, seed: int, forward_args: tuple) -> Tensor:
    """Expected gradients over a small baseline distribution: the baseline and jittered copies of it.

    SHAP averages over a distribution of references; a single one would make it integrated
    gradients at random path points. The jitter (10% of x's spread per feature) keeps every
    reference close to "no information". Captum draws each sample's reference from the whole
    baseline batch, so samples go one at a time: a per-sample baseline (``mean``, ``silence``)
    must not be paired with another sample's input.
    """
    import numpy as np

    scale = 0.1 * x.std(dim=(0, 1), keepdim=True).nan_to_num(0.0).clamp_min(1e-3)
    numpy_state = np.random.get_state()  # Captum draws the path points from numpy's global stream
    rows = []
    try:
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)
            np.random.seed(seed)
            for i in range(x.shape[0]):
                ref = base[i:i + 1]
                references = torch.cat([ref, *(ref + scale * torch.randn_like(ref) for _ in range(3))])
                args = tuple(a[i:i + 1] if isinstance(a, Tensor) and a.dim() and a.shape[0] == x.shape[0] else a
                             for a in forward_args)
                rows.append(shap.attribute(x[i:i + 1], references, target=target[i:i + 1], n_samples=n_samples,
                                           stdevs=0.0, additional_forward_args=args or None))
    finally:
        np.random.set_state(numpy_state)
    return torch.cat(rows)
