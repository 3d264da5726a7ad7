"""Fused scans: the sequential part of each recurrent cell as one C++ loop with a hand-written backward.

``impl="fused"`` (and ``"auto"``) layers call these for RNN, GRU and CTRNN on CPU float32 and for
the minGRU/minLSTM sequential mode; LSTM layers use torch's own fused oneDNN kernel, which measured
faster than :func:`lstm_scan` here (see docs/performance.md). Each scan is a ``torch.autograd.Function``:

* **forward** runs the recurrence in C++ (``rnnlab/csrc/scan.cpp``): per step one matmul of the
  previous state with ``W_hh`` (straight into the BLAS ``sgemm`` inside libtorch) and the gate
  arithmetic in one vectorised pass (AVX2/FMA), keeping the states (and GRU/LSTM gates) it made;
* **backward** runs only the ``dh`` recursion step by step (one matmul with ``W_hh`` plus the gate
  derivatives), then the weight gradients of all steps at once: ``dW_hh = sum_t dgates_t^T h_{t-1}``
  is one GEMM over the stacked steps, ``db_hh`` one sum; ``dW_ih`` and ``dx`` follow from autograd
  of the hoisted input projection (one GEMM each).

The C++ side is time-major ``(T, B, .)``; the functions here take and return batch-first tensors,
which are transposed views of time-major data when they come from
:func:`rnnlab.layers.linear_time_major` or from another scan, so no sequence is copied on the way.

The extension is compiled once at install time (``python -m rnnlab.build_kernels``, run by
``make install``); it is never compiled on import. When it is missing (or the tensors are not
float32 on CPU) :func:`supports` is False and the layers use torch's native kernel (RNN, GRU) or the
reference loop (CTRNN) instead; the numbers are the same.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)

EXT_VERSION = 7  # must match kVersion in csrc/scan.cpp
ACTIVATIONS = {"tanh": 0, "relu": 1, "softplus": 2}

try:
    from rnnlab import _scan_ext as _ext

    if getattr(_ext, "VERSION", None) != EXT_VERSION:
        log.warning("rnnlab._scan_ext is version %s, expected %s: rebuild with `python -m rnnlab.build_kernels`",
                    getattr(_ext, "VERSION", None), EXT_VERSION)
        _ext = None
except ImportError:  # not built: `make install` (or python -m rnnlab.build_kernels) builds it
    _ext = None

AVAILABLE = _ext is not None
_EMPTY = torch.empty(0)


def supports(*tensors: Tensor) -> bool:
    """True when the C++ scans can run on these tensors (extension built, float32, CPU)."""
    return AVAILABLE and all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu") for t in tensors)


def _bias(b: Tensor | None) -> Tensor:
    return _EMPTY if b is None else b.contiguous()


def _time_major(t: Tensor | None) -> Tensor:
    """``(B, T, F)`` -> contiguous ``(T, B, F)``, the kernels' layout (a step is one block of rows). Free
    when ``t`` is already a transposed view of time-major data, as the layers' projections and the
    kernels' own outputs and gradients are (so a stack of layers copies only its batch-first input)."""
    return _EMPTY if t is None else t.transpose(0, 1).contiguous()


def _grad_and_out(grad: Tensor) -> tuple[Tensor, Tensor]:
    """The time-major gradient and a buffer of its shape for ``dxw``: the gradient's own copy when
    ``contiguous`` had to make one (the kernels read each element before writing it), so backward
    allocates one sequence-sized buffer instead of two."""
    g = _time_major(grad)
    return g, (g if not grad.transpose(0, 1).is_contiguous() else torch.empty_like(g))


class _RNNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh, act):
        states = _ext.rnn_forward(_time_major(xw), h0.contiguous(), w_hh.contiguous(), _bias(b_hh), act)
        ctx.save_for_backward(states, w_hh)
        ctx.act, ctx.has_bias = act, b_hh is not None
        return states[1:].transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        states, w_hh = ctx.saved_tensors
        g, dxw = _grad_and_out(grad)
        dh0, dw, db = _ext.rnn_backward(g, dxw, states, w_hh.contiguous(), ctx.act)
        return dxw.transpose(0, 1), dh0, dw, (db if ctx.has_bias else None), None


class _GRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh):
        states, gates = _ext.gru_forward(_time_major(xw), h0.contiguous(), w_hh.contiguous(), _bias(b_hh))
        ctx.save_for_backward(states, gates, w_hh)
        ctx.has_bias = b_hh is not None
        return states[1:].transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        states, gates, w_hh = ctx.saved_tensors
        dxw, dh0, dw, db = _ext.gru_backward(_time_major(grad), states, gates, w_hh.contiguous())
        return dxw.transpose(0, 1), dh0, dw, (db if ctx.has_bias else None)


class _LSTMScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, b_hh):
        ctx.set_materialize_grads(False)  # no zero-filled gradient for an unused c sequence
        states, cells, gates = _ext.lstm_forward(_time_major(xw), h0.contiguous(), c0.contiguous(),
                                                 w_hh.contiguous(), _bias(b_hh))
        ctx.save_for_backward(states, cells, gates, w_hh)
        ctx.has_bias = b_hh is not None
        return states[1:].transpose(0, 1), cells[1:].transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c):
        states, cells, gates, w_hh = ctx.saved_tensors
        if grad_h is None:
            grad_h = torch.zeros_like(states[1:]).transpose(0, 1)
        dxw, dh0, dc0, dw, db = _ext.lstm_backward(_time_major(grad_h), _time_major(grad_c), states, cells, gates,
                                                   w_hh.contiguous())
        return dxw.transpose(0, 1), dh0, dc0, dw, (db if ctx.has_bias else None)


class _CTRNNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, x0, w_rec, alpha, act, noise):
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the states when only rates are used
        xs, rs = _ext.ctrnn_forward(_time_major(xw), x0.contiguous(), w_rec.contiguous(), alpha, act,
                                    _time_major(noise))
        ctx.save_for_backward(xs, rs, w_rec)
        ctx.alpha, ctx.act = alpha, act
        return rs[1:].transpose(0, 1), xs[1:].transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_rates, g_states):
        xs, rs, w_rec = ctx.saved_tensors
        if g_rates is None:
            g_rates = torch.zeros_like(rs[1:]).transpose(0, 1)
        g, dxw = _grad_and_out(g_rates)
        dx0, dw = _ext.ctrnn_backward(g, _time_major(g_states), dxw, xs, rs, w_rec.contiguous(), ctx.alpha, ctx.act)
        return dxw.transpose(0, 1), dx0, dw, None, None, None


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0):
        a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
        h = _ext.linear_scan_forward(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        a, h, h0 = ctx.saved_tensors
        da, db, dh0 = _ext.linear_scan_backward(grad.contiguous(), a, h, h0)
        return da, db, dh0


class _MinGRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, h0):
        k, h0 = k.contiguous(), h0.contiguous()
        h, z, g = _ext.mingru_forward(k, h0)
        ctx.save_for_backward(k, h, h0, z, g)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        k, h, h0, z, g = ctx.saved_tensors
        dk, dh0 = _ext.mingru_backward(grad.contiguous(), k, h, h0, z, g)
        return dk, dh0


def rnn_scan(xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh") -> Tensor:
    """``h_t = act(xw_t + W_hh h_{t-1} + b_hh)`` for all t: ``xw (B, T, H)`` -> ``(B, T, H)``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_scan: nonlinearity must be tanh or relu, got {nonlinearity!r}")
    return _RNNScan.apply(xw, h0, w_hh, b_hh, ACTIVATIONS[nonlinearity])


def gru_scan(xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU over all steps (gates r, z, n as :func:`rnnlab.cells.gru_step`): ``xw (B, T, 3H)`` -> ``(B, T, H)``."""
    return _GRUScan.apply(xw, h0, w_hh, b_hh)


def lstm_scan(xw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """LSTM over all steps (gates i, f, g, o as :func:`rnnlab.cells.lstm_step`): ``xw (B, T, 4H)`` ->
    ``(h (B, T, H), c (B, T, H))``."""
    return _LSTMScan.apply(xw, h0, c0, w_hh, b_hh)


def ctrnn_scan(xw: Tensor, x0: Tensor, w_rec: Tensor, alpha: float, activation: str,
               noise: Tensor | None) -> tuple[Tensor, Tensor]:
    """CTRNN over all steps (as :func:`rnnlab.cells.ctrnn_step`) -> ``(rates (B, T, H), states (B, T, H))``."""
    return _CTRNNScan.apply(xw, x0, w_rec, float(alpha), ACTIVATIONS[activation], noise)


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` element-wise for all t: ``a, b (B, T, H)``, ``h0 (B, H)`` -> ``(B, T, H)``."""
    return _LinearScan.apply(a, b, h0)


def mingru_scan(k: Tensor, h0: Tensor) -> Tensor:
    """minGRU from its projection ``k = [k_z, k_h] (B, T, 2H)``: gates and recurrence in one loop (see
    :class:`rnnlab.MinGRU`); the gates are kept for backward."""
    return _MinGRUScan.apply(k, h0)
