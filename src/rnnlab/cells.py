"""Recurrent cells, written from their equations.

Each cell has two halves:

* a pure **step function** (``rnn_step``, ``lstm_step``, ``gru_step``, ``ctrnn_step``) that takes
  the input already multiplied by ``W_ih`` (``xw_t = W_ih x_t + b_ih``) and the previous state, and
  returns the next state. The layers in :mod:`rnnlab.layers` hoist that input projection out of the
  time loop (one big matmul for all steps) and call the same step functions, so the math lives in
  exactly one place;
* an ``nn.Module`` (``RNNCell``, ``LSTMCell``, ``GRUCell``, ``CTRNNCell``) holding the weights, with
  the constructor arguments, parameter names, shapes and gate order of ``torch.nn.RNNCell`` /
  ``LSTMCell`` / ``GRUCell``, so a ``state_dict`` loads both ways.

Letters follow the equations in the docstrings: ``W_ih`` is ``weight_ih``, ``W_hh`` is ``weight_hh``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import RnnlabError

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "softplus": F.softplus}


def activation_fn(name: str):
    """Return the element-wise nonlinearity called ``name`` (tanh, relu, softplus)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise RnnlabError(
            f"nonlinearity must be one of {sorted(_ACTIVATIONS)}, got {name!r}"
        ) from None


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return F.linear(x, weight, bias)


# ---------------------------------------------------------------------------------------------
# Step functions: (input projection for this step, previous state) -> next state
# ---------------------------------------------------------------------------------------------


def rnn_step(xw_t: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh") -> Tensor:
    """Elman RNN: ``h_t = tanh(W_hh h_{t-1} + b_hh + W_ih x_t + b_ih)``; ``xw_t = W_ih x_t + b_ih``."""
    return activation_fn(nonlinearity)(xw_t + _linear(h, w_hh, b_hh))


def lstm_step(xw_t: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000), torch gate order i, f, g, o::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         cell candidate
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)
    """
    gates = xw_t + _linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def gru_step(xw_t: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU (Cho et al. 2014), torch gate order r, z, n::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)      reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)      update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))  new gate (candidate)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    The reset gate multiplies ``W_hn h + b_hn`` (not ``h`` itself), as in cuDNN and torch.
    """
    hw = _linear(h, w_hh, b_hh)
    x_r, x_z, x_n = xw_t.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h


def ctrnn_step(
    xw_t: Tensor,
    x: Tensor,
    w_rec: Tensor,
    alpha: float,
    activation: str = "relu",
    noise_t: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Continuous-time rate network, Euler step with ``alpha = dt / tau``::

        r_t     = f(x_t)
        x_{t+1} = (1 - alpha) x_t + alpha (W_rec r_t + W_in u_t + b) + sqrt(2 alpha) sigma xi_t
        r_{t+1} = f(x_{t+1})

    ``xw_t = W_in u_t + b`` and ``noise_t = sqrt(2 alpha) sigma xi_t`` (already scaled) or None.
    Returns ``(r_{t+1}, x_{t+1})``.
    """
    f = activation_fn(activation)
    drive = F.linear(f(x), w_rec) + xw_t
    x = (1.0 - alpha) * x + alpha * drive
    if noise_t is not None:
        x = x + noise_t
    return f(x), x


# ---------------------------------------------------------------------------------------------
# Cell modules
# ---------------------------------------------------------------------------------------------


class _CellBase(nn.Module):
    """Weights ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H)``."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value <= 0:
                raise RnnlabError(f"{name} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        kw = {"device": device, "dtype": dtype}
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(g, **kw))
            self.bias_hh = nn.Parameter(torch.empty(g, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scheme as torch.nn: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _check_input(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, bool]:
        if x.dim() not in (1, 2):
            raise RnnlabError(
                f"{type(self).__name__} expects input of shape (batch, {self.input_size}) or "
                f"({self.input_size},), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise RnnlabError(
                f"{type(self).__name__} expects {self.input_size} input features, got shape {tuple(x.shape)}"
            )
        batched = x.dim() == 2
        if state is not None and state.shape[-1] != self.hidden_size:
            raise RnnlabError(
                f"{type(self).__name__} expects a state of size {self.hidden_size}, got shape {tuple(state.shape)}"
            )
        return (x if batched else x.unsqueeze(0)), batched

    def _zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(_CellBase):
    """Elman RNN cell: ``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h)`` (``W_xh`` is ``weight_ih``,
    ``b_h = b_ih + b_hh``); ``nonlinearity="relu"`` swaps tanh for relu. Same API as ``torch.nn.RNNCell``.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        activation_fn(nonlinearity)  # validate early
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._check_input(x, hx)
        h = self._zeros(x) if hx is None else (hx if batched else hx.unsqueeze(0))
        h = rnn_step(_linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh, self.nonlinearity)
        return h if batched else h.squeeze(0)


class LSTMCell(_CellBase):
    """LSTM cell (gates i, f, g, o; see :func:`lstm_step`). Same API as ``torch.nn.LSTMCell``:
    ``forward(x, (h, c)) -> (h', c')``.
    """

    gates = 4

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._check_input(x, None if hx is None else hx[0])
        if hx is None:
            h, c = self._zeros(x), self._zeros(x)
        else:
            h, c = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        h, c = lstm_step(_linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_CellBase):
    """GRU cell (gates r, z, n; see :func:`gru_step`). Same API as ``torch.nn.GRUCell``."""

    gates = 3

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._check_input(x, hx)
        h = self._zeros(x) if hx is None else (hx if batched else hx.unsqueeze(0))
        h = gru_step(_linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)
        return h if batched else h.squeeze(0)


class CTRNNCell(nn.Module):
    """Continuous-time rate network cell, the neuroscientist's RNN (e.g. Song, Yang & Wang 2016)::

        x_{t+1} = (1 - alpha) x_t + alpha (W_rec r_t + W_in u_t + b) + sqrt(2 alpha) sigma xi_t
        r_t     = f(x_t),   alpha = dt / tau,   xi_t ~ N(0, 1)

    ``x`` is the synaptic current (the state), ``r`` the firing rate (the output).

    Biological constraints:

    * ``dale_ratio`` (e.g. 0.8): the first ``round(dale_ratio * H)`` units are excitatory, the rest
      inhibitory; each unit's *outgoing* weights keep one sign: ``W_eff = |W_rec| diag(s)`` with
      ``s_j = +1`` (excitatory) or ``-1`` (inhibitory), so column ``j`` (from unit ``j``) is single-signed.
    * ``mask`` (H, H) of 0/1: allowed connections; ``self_connections=False`` zeroes the diagonal.
    * ``train_recurrent=False`` / ``train_input=False``: fixed (non-trained) weights.

    Parameters: ``weight_ih`` = ``W_in (H, I)``, ``weight_hh`` = ``W_rec (H, H)`` (before the
    constraints), ``bias`` = ``b (H)``. Noise is added whenever ``noise_std > 0`` (set it to 0 for
    deterministic runs); rate and weight regularisers are :meth:`rate_penalty`, :meth:`weight_penalty`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dt: float = 10.0,
        tau: float = 100.0,
        activation: str = "relu",
        noise_std: float = 0.0,
        dale_ratio: float | None = None,
        mask: Tensor | None = None,
        self_connections: bool = True,
        train_recurrent: bool = True,
        train_input: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value <= 0:
                raise RnnlabError(f"{name} must be a positive int, got {value!r}")
        if not (0 < dt <= tau):
            raise RnnlabError(f"CTRNN needs 0 < dt <= tau (alpha = dt/tau in (0, 1]), got dt={dt}, tau={tau}")
        if dale_ratio is not None and not (0.0 <= dale_ratio <= 1.0):
            raise RnnlabError(f"dale_ratio must be in [0, 1] or None, got {dale_ratio}")
        activation_fn(activation)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.dt, self.tau, self.activation, self.noise_std = float(dt), float(tau), activation, float(noise_std)
        self.dale_ratio = dale_ratio
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw), requires_grad=train_input)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw), requires_grad=train_recurrent)
        self.bias = nn.Parameter(torch.zeros(hidden_size, **kw)) if bias else None
        conn = torch.ones(hidden_size, hidden_size, **kw) if mask is None else torch.as_tensor(mask, **kw).clone()
        if conn.shape != (hidden_size, hidden_size):
            raise RnnlabError(f"mask must have shape ({hidden_size}, {hidden_size}), got {tuple(conn.shape)}")
        if not self_connections:
            conn.fill_diagonal_(0.0)
        self.register_buffer("mask", conn)
        sign = torch.ones(hidden_size, **kw)
        if dale_ratio is not None:
            sign[int(round(dale_ratio * hidden_size)):] = -1.0
        self.register_buffer("sign", sign)
        self.reset_parameters()

    @property
    def alpha(self) -> float:
        return self.dt / self.tau

    def reset_parameters(self) -> None:
        h = self.hidden_size
        nn.init.uniform_(self.weight_ih, -1.0 / math.sqrt(self.input_size), 1.0 / math.sqrt(self.input_size))
        with torch.no_grad():
            if self.dale_ratio is None:
                # Gain-1 Gaussian scaled so the spectral radius starts near 1 (edge of chaos).
                self.weight_hh.normal_(0.0, 1.0 / math.sqrt(h))
            else:
                # Balanced E/I: inhibitory columns scaled so mean input is zero.
                self.weight_hh.normal_(0.0, 1.0 / math.sqrt(h)).abs_()
                n_exc = int((self.sign > 0).sum())
                n_inh = h - n_exc
                if n_inh > 0 and n_exc > 0:
                    self.weight_hh[:, n_exc:] *= n_exc / n_inh
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def recurrent_weight(self) -> Tensor:
        """``W_eff``: the recurrent matrix actually used, with mask and Dale's law applied."""
        w = self.weight_hh
        if self.dale_ratio is not None:
            w = w.abs() * self.sign  # broadcasts over columns: W_eff = |W| diag(s)
        return w * self.mask

    def noise(self, shape, like: Tensor) -> Tensor | None:
        """``sqrt(2 alpha) sigma xi`` of the given shape, or None when ``noise_std == 0``."""
        if self.noise_std <= 0:
            return None
        return torch.randn(shape, device=like.device, dtype=like.dtype) * (math.sqrt(2 * self.alpha) * self.noise_std)

    def forward(self, u: Tensor, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One Euler step: ``u (B, I)``, state ``x (B, H)`` -> ``(r_{t+1}, x_{t+1})``."""
        if u.dim() != 2 or u.shape[-1] != self.input_size:
            raise RnnlabError(f"CTRNNCell expects input of shape (batch, {self.input_size}), got {tuple(u.shape)}")
        if x is None:
            x = u.new_zeros(u.shape[0], self.hidden_size)
        xw = F.linear(u, self.weight_ih, self.bias)
        return ctrnn_step(xw, x, self.recurrent_weight(), self.alpha, self.activation, self.noise(x.shape, x))

    def rate_penalty(self, rates: Tensor) -> Tensor:
        """Mean squared firing rate (metabolic cost), for the loss."""
        return rates.pow(2).mean()

    def weight_penalty(self) -> Tensor:
        """Mean squared effective recurrent weight, for the loss."""
        return self.recurrent_weight().pow(2).mean()

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, dt={self.dt}, tau={self.tau}, activation={self.activation!r}, "
            f"noise_std={self.noise_std}, dale_ratio={self.dale_ratio}"
        )
