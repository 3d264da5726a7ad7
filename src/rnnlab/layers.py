"""Recurrent layers: a cell run over time.

``rnnlab.RNN``, ``rnnlab.LSTM``, ``rnnlab.GRU`` have the constructor, parameter names, state_dict keys
and shapes of ``torch.nn.RNN/LSTM/GRU`` (batch-first by default); ``rnnlab.CTRNN`` the same layer
interface for the continuous-time rate cell.

Every layer runs the same path::

    for each layer, for each direction:
        xw = x @ W_ih^T + b_ih            # hoisted out of the time loop: one GEMM for all steps
        h  = scan(xw, h0, W_hh, b_hh)     # the sequential part: one W_hh matmul per step
        h_n = h[b, length_b - 1]          # each sequence's own last step

``impl`` picks the scan:

* ``"reference"``: the step functions of :mod:`rnnlab.cells` in a Python loop (the math you read);
* ``"fused"``: the fastest kernel available: for LSTM torch's fused kernel (oneDNN on CPU, cuDNN on
  GPU); for RNN/GRU on CPU the custom autograd kernels of :mod:`rnnlab.kernels` (when present), on
  GPU cuDNN; for CTRNN :mod:`rnnlab.kernels`;
* ``"auto"``: fused when available, else reference (logged at debug level).

Variable-length batches (``lengths``): outputs past a sequence's end are zero and ``h_n`` is taken at
its last step, the same numbers as ``torch.nn.utils.rnn.pack_padded_sequence``. The backward
direction reverses each sequence *within its length*, so padding never enters a state.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells import CTRNNCell, activation_fn, ctrnn_step, gru_step, lstm_step, rnn_step
from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)

IMPLS = ("auto", "reference", "fused")

try:  # the fused scan kernels (issue: speed); optional so the reference path never depends on them
    from rnnlab import kernels as _kernels
except ImportError:  # pragma: no cover - exercised only while kernels.py is absent
    _kernels = None


# ---------------------------------------------------------------------------------------------
# Reference scans: the cell equations step by step. ``unbind`` (not ``xw[:, t]``) keeps backward
# linear in T: indexing inside the loop makes autograd accumulate a full-size zero tensor per step.
# ---------------------------------------------------------------------------------------------


def rnn_scan_reference(xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh") -> Tensor:
    h, out = h0, []
    for xw_t in xw.unbind(1):
        h = rnn_step(xw_t, h, w_hh, b_hh, nonlinearity)
        out.append(h)
    return torch.stack(out, 1)


def gru_scan_reference(xw: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    h, out = h0, []
    for xw_t in xw.unbind(1):
        h = gru_step(xw_t, h, w_hh, b_hh)
        out.append(h)
    return torch.stack(out, 1)


def lstm_scan_reference(xw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    h, c, hs, cs = h0, c0, [], []
    for xw_t in xw.unbind(1):
        h, c = lstm_step(xw_t, h, c, w_hh, b_hh)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs, 1), torch.stack(cs, 1)


def ctrnn_scan_reference(
    xw: Tensor, x0: Tensor, w_rec: Tensor, alpha: float, activation: str, noise: Tensor | None
) -> tuple[Tensor, Tensor]:
    x, rs, xs = x0, [], []
    noise_steps = noise.unbind(1) if noise is not None else [None] * xw.shape[1]
    for xw_t, n_t in zip(xw.unbind(1), noise_steps):
        r, x = ctrnn_step(xw_t, x, w_rec, alpha, activation, n_t)
        rs.append(r)
        xs.append(x)
    return torch.stack(rs, 1), torch.stack(xs, 1)


def linear_time_major(inp: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(inp, weight, bias)`` for ``inp (B, T, F)``, computed on time-major rows and returned as
    a ``(B, T, G)`` view of a contiguous ``(T, B, G)`` tensor: the C++ kernels (time-major) read it
    without a copy and their time-major ``dxw`` flows back into this GEMM's backward without one."""
    batch, steps = inp.shape[:2]
    rows = inp.transpose(0, 1).reshape(steps * batch, -1)  # copies a batch-first input; free for a kernel's output
    out = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
    return out.view(steps, batch, -1).transpose(0, 1)


# ---------------------------------------------------------------------------------------------
# Variable lengths
# ---------------------------------------------------------------------------------------------


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (B, T, F)`` within its own length; padding stays where it is."""
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(0)
    lens = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


def last_step(seq: Tensor, lengths: Tensor | None) -> Tensor:
    """``seq[b, lengths[b] - 1]`` for each ``b`` (the last step when ``lengths`` is None)."""
    if lengths is None:
        return seq[:, -1]
    idx = (lengths.to(seq.device) - 1).view(-1, 1, 1).expand(-1, 1, seq.shape[-1])
    return seq.gather(1, idx).squeeze(1)


def mask_padding(seq: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero the steps of ``seq (B, T, H)`` past each sequence's length."""
    if lengths is None:
        return seq
    t = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0)
    keep = (t < lengths.to(seq.device).unsqueeze(1)).unsqueeze(-1)
    return seq * keep.to(seq.dtype)


# ---------------------------------------------------------------------------------------------
# Input checks shared by every layer
# ---------------------------------------------------------------------------------------------


def check_sequence_input(name: str, x: Tensor, input_size: int, batch_first: bool) -> Tensor:
    """Return ``x`` batch-first after checking rank, size and dtype; clear errors otherwise."""
    layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
    if not isinstance(x, Tensor):
        raise RnnlabError(f"{name} expects a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != 3:
        raise RnnlabError(
            f"{name} expects a 3-D input {layout} with features={input_size}, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise RnnlabError(f"{name} expects a floating-point input, got dtype {x.dtype}")
    if not batch_first:
        x = x.transpose(0, 1)
    if x.shape[-1] != input_size:
        raise RnnlabError(
            f"{name} expects input features={input_size} (last dim), got shape {tuple(x.shape)} "
            f"(batch_first={batch_first})"
        )
    if x.shape[0] == 0:
        raise RnnlabError(f"{name} got an empty batch (batch size 0), shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise RnnlabError(f"{name} got zero-length sequences (time steps 0), shape {tuple(x.shape)}")
    return x


def check_lengths(name: str, lengths, batch: int, steps: int) -> Tensor | None:
    """Validate ``lengths`` (B,) in [1, T]; returns a CPU int64 tensor, or None when all are full."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths).detach().to("cpu")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise RnnlabError(f"{name}: lengths must be integers, got dtype {lengths.dtype}")
    lengths = lengths.long()
    if lengths.shape != (batch,):
        raise RnnlabError(f"{name}: lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > steps:
        raise RnnlabError(
            f"{name}: lengths must be in [1, {steps}] (the number of time steps), got min {lo}, max {hi}"
        )
    return None if lo == steps else lengths


def check_state(name: str, h: Tensor, expected: tuple[int, ...], what: str = "hx") -> None:
    if not isinstance(h, Tensor) or tuple(h.shape) != expected:
        got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise RnnlabError(f"{name}: {what} must have shape {expected} (num_layers*num_directions, batch, hidden), got {got}")


# ---------------------------------------------------------------------------------------------
# The shared layer machinery
# ---------------------------------------------------------------------------------------------

# scan(layer, direction, xw, state0) -> (seq of outputs (B,T,H), seq of second state or None)
Scan = Callable[[int, int, Tensor, tuple], tuple]


def run_stack(
    x: Tensor,
    lengths: Tensor | None,
    states0: list[tuple[Tensor, ...]],
    num_layers: int,
    num_directions: int,
    project: Callable[[int, int, Tensor], Tensor],
    scan: Scan,
    dropout: float,
    training: bool,
) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
    """Run ``num_layers`` x ``num_directions`` scans; returns the last layer's outputs and final states.

    ``states0[layer * D + d]`` is the initial state tuple; the result holds the final state tuples
    in the same order (taken at each sequence's own last step).
    """
    finals: list[tuple[Tensor, ...]] = []
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for d in range(num_directions):
            inp = layer_input if d == 0 else reverse_padded(layer_input, lengths)
            xw = project(layer, d, inp)
            seqs = scan(layer, d, xw, states0[layer * num_directions + d])
            finals.append(tuple(last_step(s, lengths) for s in seqs))
            out = mask_padding(seqs[0], lengths)
            outs.append(out if d == 0 else reverse_padded(out, lengths))
        layer_input = outs[0] if num_directions == 1 else torch.cat(outs, -1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, finals


class _TorchCompatibleRNN(nn.Module):
    """RNN / LSTM / GRU stack with ``torch.nn`` parameter names (``weight_ih_l0_reverse`` ...)."""

    mode = "RNN"  # RNN, LSTM, GRU
    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        impl: str = "auto",
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ):
        super().__init__()
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RnnlabError(f"{name}: {arg} must be a positive int, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise RnnlabError(f"{name}: dropout must be a float in [0, 1), got {dropout!r}")
        if impl not in IMPLS:
            raise RnnlabError(f"{name}: impl must be one of {IMPLS}, got {impl!r}")
        activation_fn(nonlinearity)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.impl, self.nonlinearity = bidirectional, impl, nonlinearity
        self.num_directions = 2 if bidirectional else 1
        kw = {"device": device, "dtype": dtype}
        g = self.gates * hidden_size
        self._weight_names: list[list[str]] = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            for d in range(self.num_directions):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"] + ([f"bias_ih{sfx}", f"bias_hh{sfx}"] if bias else [])
                shapes = [(g, in_size), (g, hidden_size)] + ([(g,), (g,)] if bias else [])
                for n, s in zip(names, shapes):
                    setattr(self, n, nn.Parameter(torch.empty(*s, **kw)))
                self._weight_names.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / self.hidden_size**0.5  # torch.nn's U(-1/sqrt(H), 1/sqrt(H))
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``torch.nn.LSTM`` on GPU."""

    def _weights(self, layer: int, d: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        names = self._weight_names[layer * self.num_directions + d]
        w_ih, w_hh = getattr(self, names[0]), getattr(self, names[1])
        b_ih, b_hh = (getattr(self, names[2]), getattr(self, names[3])) if self.bias else (None, None)
        return w_ih, w_hh, b_ih, b_hh

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for names in self._weight_names for n in names]

    # -- state -----------------------------------------------------------------------------

    def _initial_state(self, x: Tensor, hx):
        """``hx`` checked (zeros when None): ``(h_0, c_0)`` for LSTM, else ``h_0``, each ``(L*D, B, H)``."""
        name = type(self).__name__
        shape = (self.num_layers * self.num_directions, x.shape[0], self.hidden_size)
        if self.mode == "LSTM":
            if hx is None:
                return x.new_zeros(shape), x.new_zeros(shape)
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise RnnlabError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            check_state(name, hx[0], shape, "h_0")
            check_state(name, hx[1], shape, "c_0")
            return tuple(hx)
        if hx is None:
            return x.new_zeros(shape)
        check_state(name, hx, shape)
        return hx

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: Tensor, hx=None, lengths=None):
        """``x (B, T, input_size)`` (batch-first) -> ``(output (B, T, D*H), h_n (L*D, B, H))``;
        LSTM returns ``(output, (h_n, c_n))``. ``lengths (B,)`` for variable-length batches."""
        name = type(self).__name__
        x = check_sequence_input(name, x, self.input_size, self.batch_first)
        lengths = check_lengths(name, lengths, x.shape[0], x.shape[1])
        hx = self._initial_state(x, hx)
        impl = self._choose_impl(x)
        if impl == "native":  # nothing around torch's kernel but the checks: the same graph as torch.nn's
            output, h_n = self._forward_native(x, hx, lengths)
        else:
            hs = hx if self.mode == "LSTM" else (hx,)
            states0 = [tuple(h[k] for h in hs) for k in range(hs[0].shape[0])]
            kernels = impl == "kernels"
            scan, project = (self._kernel_scan, linear_time_major) if kernels else (self._reference_scan, F.linear)
            output, finals = run_stack(
                x, lengths, states0, self.num_layers, self.num_directions,
                lambda layer, d, inp: project(inp, *self._input_weights(layer, d)), scan, self.dropout, self.training,
            )
            h_n = tuple(torch.stack([f[i] for f in finals]) for i in range(len(hs)))
            h_n = h_n if self.mode == "LSTM" else h_n[0]
        if not self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def _choose_impl(self, x: Tensor) -> str:
        """'reference', 'kernels' (rnnlab.kernels) or 'native' (torch's fused kernel)."""
        if self.impl == "reference":
            return "reference"
        if self.mode == "LSTM" or x.is_cuda:
            return "native"  # oneDNN on CPU / cuDNN on GPU: the fastest kernels there are
        if _kernels is not None and _kernels.supports(x):
            return "kernels"
        if self.impl == "auto":
            log.debug("%s: rnnlab.kernels unavailable, falling back to torch's native kernel", type(self).__name__)
        return "native"

    def _input_weights(self, layer: int, d: int) -> tuple[Tensor, Tensor | None]:
        w_ih, _, b_ih, _ = self._weights(layer, d)
        return w_ih, b_ih

    def _reference_scan(self, layer: int, d: int, xw: Tensor, state0: tuple) -> tuple:
        _, w_hh, _, b_hh = self._weights(layer, d)
        if self.mode == "LSTM":
            return lstm_scan_reference(xw, state0[0], state0[1], w_hh, b_hh)
        if self.mode == "GRU":
            return (gru_scan_reference(xw, state0[0], w_hh, b_hh),)
        return (rnn_scan_reference(xw, state0[0], w_hh, b_hh, self.nonlinearity),)

    def _kernel_scan(self, layer: int, d: int, xw: Tensor, state0: tuple) -> tuple:
        _, w_hh, _, b_hh = self._weights(layer, d)
        if self.mode == "LSTM":
            return _kernels.lstm_scan(xw, state0[0], state0[1], w_hh, b_hh)
        if self.mode == "GRU":
            return (_kernels.gru_scan(xw, state0[0], w_hh, b_hh),)
        return (_kernels.rnn_scan(xw, state0[0], w_hh, b_hh, self.nonlinearity),)

    def _forward_native(self, x: Tensor, hx, lengths: Tensor | None):
        """The whole stack in one call to torch's fused RNN kernel (what ``torch.nn.LSTM`` runs) ->
        ``(output, h_n)``, ``h_n`` a tuple ``(h_n, c_n)`` for LSTM."""
        fn = {"LSTM": torch._VF.lstm, "GRU": torch._VF.gru}.get(self.mode)
        if fn is None:
            fn = torch._VF.rnn_tanh if self.nonlinearity == "tanh" else torch._VF.rnn_relu
        args = (self._flat_weights, self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        if lengths is None:
            result = fn(x, hx, *args, True)
            output, states = result[0], result[1:]
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            order, unorder = packed.sorted_indices, packed.unsorted_indices
            hx_sorted = tuple(h.index_select(1, order) for h in hx) if self.mode == "LSTM" else hx.index_select(1, order)
            result = fn(packed.data, packed.batch_sizes, hx_sorted, *args)
            out_packed = nn.utils.rnn.PackedSequence(result[0], packed.batch_sizes, order, unorder)
            output, _ = nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
            states = tuple(s.index_select(1, unorder) for s in result[1:])
        return output, (tuple(states) if self.mode == "LSTM" else states[0])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, impl={self.impl!r}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.mode == "RNN" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s


class RNN(_TorchCompatibleRNN):
    """Elman RNN layer, ``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h)`` per step (see :func:`rnnlab.cells.rnn_step`).

    Drop-in for ``torch.nn.RNN`` (batch-first by default): same arguments (+ ``impl``), same state_dict.
    """

    mode, gates = "RNN", 1


class LSTM(_TorchCompatibleRNN):
    """LSTM layer (gates i, f, g, o; see :func:`rnnlab.cells.lstm_step`). Drop-in for ``torch.nn.LSTM``."""

    mode, gates = "LSTM", 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0,
                 bidirectional=False, impl="auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, impl,
                         "tanh", device, dtype)


class GRU(_TorchCompatibleRNN):
    """GRU layer (gates r, z, n; see :func:`rnnlab.cells.gru_step`). Drop-in for ``torch.nn.GRU``."""

    mode, gates = "GRU", 3

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0,
                 bidirectional=False, impl="auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, impl,
                         "tanh", device, dtype)


class CTRNN(nn.Module):
    """Continuous-time rate network layer over time (see :class:`rnnlab.cells.CTRNNCell`).

    ``forward(u, hx=None, lengths=None) -> (rates (B, T, H), x_n (num_layers, B, H))``: the output is
    the firing rate ``r_t`` after each step, the returned state is the current ``x``. Layers are
    stacked as in the other layers (``cells[k]`` holds layer ``k``'s weights); it runs forward in
    time only (a brain circuit has no backward direction).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        impl: str = "auto",
        dt: float = 10.0,
        tau: float = 100.0,
        activation: str = "relu",
        noise_std: float = 0.0,
        dale_ratio: float | None = None,
        mask: Tensor | None = None,
        self_connections: bool = True,
        train_recurrent: bool = True,
        train_input: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if bidirectional:
            raise RnnlabError("CTRNN runs forward in time only: bidirectional must be False, got True")
        if impl not in IMPLS:
            raise RnnlabError(f"CTRNN: impl must be one of {IMPLS}, got {impl!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise RnnlabError(f"CTRNN: num_layers must be a positive int, got {num_layers!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.impl, self.bidirectional = batch_first, float(dropout), impl, False
        self.cells = nn.ModuleList(
            CTRNNCell(input_size if k == 0 else hidden_size, hidden_size, dt, tau, activation, noise_std, dale_ratio,
                      mask, self_connections, train_recurrent, train_input, bias, device, dtype)
            for k in range(num_layers)
        )

    @property
    def cell(self) -> CTRNNCell:
        """The first (usually only) layer's cell."""
        return self.cells[0]

    def forward(self, u: Tensor, hx: Tensor | None = None, lengths=None):
        u = check_sequence_input("CTRNN", u, self.input_size, self.batch_first)
        lengths = check_lengths("CTRNN", lengths, u.shape[0], u.shape[1])
        shape = (self.num_layers, u.shape[0], self.hidden_size)
        if hx is None:
            hx = u.new_zeros(shape)
        check_state("CTRNN", hx, shape)
        use_kernels = self.impl != "reference" and _kernels is not None and _kernels.supports(u)
        if self.impl == "auto" and not use_kernels:
            log.debug("CTRNN: rnnlab.kernels.ctrnn_scan unavailable, using the reference loop")

        def project(layer, d, inp):
            cell = self.cells[layer]
            return (linear_time_major if use_kernels else F.linear)(inp, cell.weight_ih, cell.bias)

        def scan(layer, d, xw, state0):
            cell = self.cells[layer]
            noise = cell.noise(xw.shape, xw)
            fn = _kernels.ctrnn_scan if use_kernels else ctrnn_scan_reference
            return fn(xw, state0[0], cell.recurrent_weight(), cell.alpha, cell.activation, noise)

        rates, finals = run_stack(
            u, lengths, [(hx[k],) for k in range(self.num_layers)], self.num_layers, 1,
            project, scan, self.dropout, self.training,
        )
        x_n = torch.stack([f[1] for f in finals])
        if not self.batch_first:
            rates = rates.transpose(0, 1)
        return rates, x_n

    def rate_penalty(self, rates: Tensor) -> Tensor:
        return rates.pow(2).mean()

    def weight_penalty(self) -> Tensor:
        return sum(c.weight_penalty() for c in self.cells) / self.num_layers
