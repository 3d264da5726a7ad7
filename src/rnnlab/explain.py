"""Which time steps and which inputs drove a recurrent network's output: attributions with Captum.

``rnnlab.explain(model, x)`` returns, for every sample, an attribution per time step and input
feature, computed by one of Captum's methods:

* ``integrated_gradients`` (Sundararajan et al. 2017): the path integral of the gradient from a
  baseline input to ``x``. *Completeness*: the attributions add up to ``f(x) - f(baseline)``; the
  gap (``delta``) is reported and shrinks with ``n_steps``.
* ``gradient_shap`` (Lundberg & Lee 2017): expected gradients over baselines jittered with noise,
  an approximation of SHAP values.
* ``occlusion`` (Zeiler & Fergus 2014): replace one time step at a time (all its features) by the
  baseline and measure how the output changes: model-agnostic, no gradients.

The baseline is what "no information" means for the data: ``zeros`` (standardised inputs,
one-hot tokens), ``mean`` (each series' own mean: forecasting), ``silence`` (each feature's
minimum over time: the floor of a log-mel spectrogram). Read docs/explain.md for what the numbers
mean and their limits.
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

        ``extra(ax)`` may draw a companion panel (e.g. the attention map of a translation).
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnnlab.runs import save_figure

        attr = self.attributions[sample].detach().cpu()
        T, F_ = attr.shape
        panels = 2 + (extra is not None) + (inputs is not None)
        fig, axes = plt.subplots(panels, 1, figsize=(max(6, min(16, 0.18 * T + 3)), 2.2 * panels + (0.12 * F_ if F_ > 8 else 0)),
                                 squeeze=False, gridspec_kw={"height_ratios": [3 if F_ > 1 else 1.2] + [1] * (panels - 1)})
        axes = axes[:, 0]
        lim = float(attr.abs().max()) or 1.0
        image = axes[0].imshow(attr.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
                               interpolation="nearest")
        fig.colorbar(image, ax=axes[0], pad=0.01, label="attribution")
        axes[0].set(ylabel="input feature", title=title or f"{self.method}: target {int(self.target[sample])}")
        if feature_labels is not None and F_ <= 40:
            axes[0].set_yticks(range(F_), [str(f) for f in feature_labels], fontsize=7)
        row = 1
        if inputs is not None:
            axes[row].plot(inputs[sample].detach().cpu().numpy())
            axes[row].set(ylabel="input", xlim=(-0.5, T - 0.5))
            row += 1
        axes[row].bar(range(T), self.per_step()[sample].detach().cpu().numpy(), color="slategray")
        axes[row].set(ylabel="per step", xlabel="time step", xlim=(-0.5, T - 0.5))
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

    def out(x):
        y = fn(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if y.dim() == 3:
            y = y[:, -1]
        if y.dim() == 1:
            y = y.unsqueeze(-1)
        return y

    return out


def make_baseline(x: Tensor, baseline) -> Tensor:
    """The reference input: a tensor, or ``zeros`` / ``mean`` (each sample's mean over time) / ``silence``."""
    if isinstance(baseline, Tensor):
        if baseline.shape != x.shape:
            baseline = baseline.expand_as(x)
        return baseline.to(x.dtype)
    if baseline is None or baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(1, keepdim=True).expand_as(x).clone()
    if baseline == "silence":
        return x.amin(1, keepdim=True).expand_as(x).clone()
    raise RnnlabError(f"baseline must be a tensor or one of {BASELINES}, got {baseline!r}")


def explain(model, x: Tensor, target: int | Tensor | None = None, method: str = "integrated_gradients",
            baseline="zeros", n_steps: int = 64, n_samples: int = 128, forward: Callable | None = None) -> Explanation:
    """Attribution of the ``target`` output of ``model`` to every time step and feature of ``x``.

    Args:
        model: an ``nn.Module`` mapping ``x (batch, time, features)`` to outputs ``(batch, outputs)``
            (a tuple's first item and a sequence's last step are used).
        target: the output index to explain (int, or one per sample); None: the predicted class
            for several outputs, output 0 for one.
        method: ``integrated_gradients``, ``gradient_shap`` or ``occlusion``.
        baseline: ``zeros``, ``mean``, ``silence`` or a tensor like ``x``.
        forward: a function to call instead of ``model`` (e.g. a seq2seq decoder step).
    """
    from captum.attr import GradientShap, IntegratedGradients, Occlusion

    if method not in METHODS:
        raise RnnlabError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise RnnlabError(f"explain expects a float tensor (batch, time, features), got {got}")
    fn = _output_fn(model, forward)
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        x = x.detach()
        base = make_baseline(x, baseline)
        with torch.no_grad():
            out = fn(x)
            base_out = fn(base)
        if target is None:
            target = out.argmax(-1) if out.shape[-1] > 1 else torch.zeros(x.shape[0], dtype=torch.long)
        target = torch.as_tensor(target, dtype=torch.long).expand(x.shape[0]).clone()
        if int(target.max()) >= out.shape[-1] or int(target.min()) < 0:
            raise RnnlabError(f"target must index the model's {out.shape[-1]} outputs, got {target.tolist()}")
        delta = None
        # RNN backward needs training mode on cuDNN; on the CPU eval mode keeps dropout off.
        if method == "integrated_gradients":
            attr, delta = IntegratedGradients(fn).attribute(x, base, target=target, n_steps=n_steps,
                                                            return_convergence_delta=True)
        elif method == "gradient_shap":
            noise = base.std().clamp_min(1e-3) * 0.1 if base.numel() else 0.1
            baselines = torch.cat([base, base + noise * torch.randn_like(base)])
            attr = GradientShap(fn).attribute(x, baselines, target=target, n_samples=n_samples, stdevs=0.0)
        else:
            attr = Occlusion(fn).attribute(x, sliding_window_shapes=(1, x.shape[2]), strides=(1, x.shape[2]),
                                           baselines=base, target=target)
            attr = attr / x.shape[2]  # occlusion repeats a step's effect on each of its features
        idx = torch.arange(x.shape[0])
        return Explanation(attr.detach(), method, target, base, out[idx, target].detach(), base_out[idx, target].detach(),
                           None if delta is None else delta.detach())
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
