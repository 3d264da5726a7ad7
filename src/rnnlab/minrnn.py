"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrent layers whose gates do
not depend on ``h_{t-1}``, so the recurrence is linear in ``h`` and a whole sequence is one scan.

minGRU (per unit; ``g(v) = v + 0.5`` for ``v >= 0``, ``sigmoid(v)`` otherwise, always positive)::

    z_t  = sigmoid(W_z x_t + b_z)                 update gate
    h~_t = g(W_h x_t + b_h)                       candidate
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

minLSTM::

    f_t = sigmoid(W_f x_t + b_f),  i_t = sigmoid(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
    f'_t = f_t / (f_t + i_t),      i'_t = i_t / (f_t + i_t)
    h_t = f'_t * h_{t-1} + i'_t * h~_t

Both are ``h_t = a_t * h_{t-1} + b_t`` with ``a_t, b_t`` computed for every step at once from one
input projection (one GEMM). Three ways to run that recurrence, same numbers:

* ``"scan"``: the log-space parallel scan (Heinsen 2023): ``log h_t = a*_t + logcumsumexp(log b - a*)_t``
  with ``a*_t = sum_{s<=t} log a_s`` (the ``h_0`` term is added separately, so ``h_0`` may be any sign);
  a handful of whole-sequence tensor ops, the mode that wins on a GPU;
* ``"sequential"``: a fused C++ loop with a hand-written backward: for minGRU
  :func:`rnnlab.kernels.mingru_scan` (gates and recurrence together),
  for minLSTM and for variable-length batches :func:`rnnlab.kernels.linear_scan` on ``a, b``;
  the mode that wins on CPU;
* ``"reference"``: the same step in a Python loop.

``mode="auto"`` picks ``scan`` on a GPU (or on CPU without the built kernels, for sequences of 64+
steps) and ``sequential`` on CPU otherwise; the choice is in ``layer.chosen_mode`` after each call and
logged at debug level.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab import kernels as _kernels
from rnnlab.errors import RnnlabError
from rnnlab.layers import check_lengths, check_sequence_input, check_state, last_step, mask_padding

log = logging.getLogger(__name__)

MODES = ("auto", "scan", "sequential", "reference")


def g_positive(v: Tensor) -> Tensor:
    """``g(v) = v + 0.5`` for ``v >= 0``, ``sigmoid(v)`` otherwise: continuous, positive, so ``log h~`` exists."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """``log g(v)``, computed without forming ``g`` (stable for very negative ``v``)."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def linear_recurrence_reference(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` step by step (``unbind`` keeps backward linear in T)."""
    h, out = h0, []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = torch.addcmul(b_t, a_t, h)
        out.append(h)
    return torch.stack(out, 1)


def linear_recurrence_log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` for ``b_t > 0`` from ``log a``, ``log b`` (B, T, H) in parallel over T."""
    a_star = torch.cumsum(log_a, dim=1)
    return torch.exp(a_star) * h0.unsqueeze(1) + torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))


class _MinRNN(nn.Module):
    """Shared stack: per layer one ``nn.Linear(in, parts * H)`` (``linear_l{k}``) and the linear recurrence."""

    parts = 2
    fused_kernel = None  # (k, h0) -> h in one C++ loop, where there is one (minGRU)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, mode: str = "auto", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RnnlabError(f"{name}: {arg} must be a positive int, got {value!r}")
        if mode not in MODES:
            raise RnnlabError(f"{name}: mode must be one of {MODES}, got {mode!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.mode = batch_first, mode
        self.chosen_mode: str | None = None
        for k in range(num_layers):
            in_size = input_size if k == 0 else hidden_size
            setattr(self, f"linear_l{k}", nn.Linear(in_size, self.parts * hidden_size, bias, device=device, dtype=dtype))

    def choose_mode(self, x: Tensor) -> str:
        """The mode ``auto`` resolves to for input ``x (B, T, I)``."""
        if self.mode != "auto":
            return self.mode
        if x.is_cuda:
            return "scan"
        if _kernels.supports(x):
            return "sequential"
        return "scan" if x.shape[1] >= 64 else "reference"

    # (log_a, log_b) for the scan, (a, b) for the sequential modes, from the projection k (B, T, parts*H)
    def coefficients(self, k: Tensor, log_space: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, hx: Tensor | None = None, lengths=None) -> tuple[Tensor, Tensor]:
        """``x (B, T, input_size)`` -> ``(output (B, T, H), h_n (num_layers, B, H))``."""
        name = type(self).__name__
        x = check_sequence_input(name, x, self.input_size, self.batch_first)
        lengths = check_lengths(name, lengths, x.shape[0], x.shape[1])
        shape = (self.num_layers, x.shape[0], self.hidden_size)
        if hx is None:
            hx = x.new_zeros(shape)
        check_state(name, hx, shape)
        mode = self.choose_mode(x)
        if mode != self.chosen_mode:
            log.debug("%s: %s mode for input %s on %s", name, mode, tuple(x.shape), x.device)
        self.chosen_mode = mode
        pad = None
        if lengths is not None:  # past its end a sequence holds its state: a = 1, b = 0
            t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
            pad = (t >= lengths.to(x.device).unsqueeze(1)).unsqueeze(-1)
        finals, inp = [], x
        for layer in range(self.num_layers):
            k = getattr(self, f"linear_l{layer}")(inp)
            h0 = hx[layer]
            if mode == "scan":
                log_a, log_b = self.coefficients(k, log_space=True)
                if pad is not None:
                    log_a = log_a.masked_fill(pad, 0.0)
                    log_b = log_b.masked_fill(pad, float("-inf"))
                h = linear_recurrence_log_scan(log_a, log_b, h0)
            elif mode == "sequential" and pad is None and self.fused_kernel is not None and _kernels.supports(k):
                h = self.fused_kernel(k, h0)  # gates and recurrence in one C++ loop
            else:
                a, b = self.coefficients(k, log_space=False)
                if pad is not None:
                    a, b = a.masked_fill(pad, 1.0), b.masked_fill(pad, 0.0)
                if mode == "sequential" and _kernels.supports(a):
                    h = _kernels.linear_scan(a, b, h0)
                else:
                    h = linear_recurrence_reference(a, b, h0)
            finals.append(h[:, -1])
            inp = mask_padding(h, lengths)
        out = inp if self.batch_first else inp.transpose(0, 1)
        return out, torch.stack(finals)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, mode={self.mode!r}"


class MinGRU(_MinRNN):
    """minGRU layer (see the module docstring): ``z, h~`` from one linear map of ``x``; ``h_t = (1-z) h_{t-1} + z h~``."""

    parts = 2
    fused_kernel = staticmethod(_kernels.mingru_scan)

    def coefficients(self, k: Tensor, log_space: bool) -> tuple[Tensor, Tensor]:
        k_z, k_h = k.chunk(2, dim=-1)
        if log_space:  # log(1 - z) = -softplus(k_z), log z = -softplus(-k_z)
            return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)
        return torch.sigmoid(-k_z), torch.sigmoid(k_z) * g_positive(k_h)


class MinLSTM(_MinRNN):
    """minLSTM layer (see the module docstring): ``f' h_{t-1} + i' h~`` with ``f' + i' = 1``."""

    parts = 3

    def coefficients(self, k: Tensor, log_space: bool) -> tuple[Tensor, Tensor]:
        k_f, k_i, k_h = k.chunk(3, dim=-1)
        d = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        if log_space:  # log f' = -softplus(log i - log f), log i' = -softplus(log f - log i)
            return -F.softplus(d), -F.softplus(-d) + log_g(k_h)
        return torch.sigmoid(-d), torch.sigmoid(d) * g_positive(k_h)
