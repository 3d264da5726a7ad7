"""Keras layers over rnnlab's torch layers: the same names, arguments and meanings.

A layer is built lazily from the shape of its first input (as in Keras): ``build(input_shape)``
creates the torch module, ``compute_output_shape`` gives the symbolic output for the functional
API. Masks (``Embedding(mask_zero=True)``, ``Masking``) flow with the tensors; a recurrent layer
skips masked steps by running over each sequence's unmasked steps only (rnnlab's ``lengths``).
Weights start as Keras starts them (glorot-uniform inputs, orthogonal recurrence, zero biases,
forget-gate bias 1), so a program converges as it does under Keras.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab import layers as rl
from rnnlab.cells import gru_step, lstm_step, rnn_step
from rnnlab.errors import RnnlabError

# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

ACTIVATIONS = {
    None: lambda x: x, "linear": lambda x: x, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, -1), "softplus": F.softplus, "elu": F.elu, "selu": F.selu,
    "gelu": F.gelu, "swish": F.silu, "silu": F.silu, "exponential": torch.exp, "log_softmax": lambda x: torch.log_softmax(x, -1),
}


def get_activation(name):
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise RnnlabError(f"activation must be one of {sorted(k for k in ACTIVATIONS if k)} or a callable, got {name!r}")
    return ACTIVATIONS[name]


# ---------------------------------------------------------------------------------------------
# Symbolic tensors for the functional API
# ---------------------------------------------------------------------------------------------


class KerasTensor:
    """A placeholder with a shape (batch dim None), produced by ``Input`` or a layer call."""

    def __init__(self, shape: tuple, layer: "Layer | None" = None, inputs: list | None = None, index: int = 0,
                 dtype: str = "float32", has_mask: bool = False):
        self.shape, self.layer, self.inputs, self.index, self.dtype = tuple(shape), layer, inputs or [], index, dtype
        self.has_mask = has_mask

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}>"


def Input(shape: tuple | None = None, batch_size: int | None = None, dtype: str = "float32", name: str | None = None,
          batch_shape: tuple | None = None) -> KerasTensor:
    """``keras.Input(shape=(timesteps, features))``: the model's input placeholder."""
    if batch_shape is not None:
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise RnnlabError("Input needs shape=(...) (without the batch dimension)")
    layer = InputLayer(shape=tuple(shape), dtype=dtype, name=name)
    out = KerasTensor((None, *shape), layer=layer, dtype=dtype)
    layer._outputs = [out]
    return out


# ---------------------------------------------------------------------------------------------
# Base layer
# ---------------------------------------------------------------------------------------------

_COUNTS: dict[str, int] = {}


def _unique_name(prefix: str) -> str:
    _COUNTS[prefix] = _COUNTS.get(prefix, 0) + 1
    n = _COUNTS[prefix]
    return prefix if n == 1 else f"{prefix}_{n - 1}"


def _snake(name: str) -> str:
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out.replace("l_s_t_m", "lstm").replace("g_r_u", "gru").replace("r_n_n", "rnn")


class Layer(nn.Module):
    """Base class: lazy build, symbolic calls, masks, ``get_config`` for saving."""

    supports_masking = True  # passes an incoming mask through unchanged

    def __init__(self, name: str | None = None, input_shape: tuple | None = None, input_dim: int | None = None,
                 dtype: Any = None, trainable: bool = True, **kwargs):
        super().__init__()
        unknown = set(kwargs) - {"batch_input_shape", "input_length", "batch_size"}
        if unknown:
            raise RnnlabError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        if input_shape is None and input_dim is not None:
            input_shape = (input_dim,)
        if input_shape is None and kwargs.get("batch_input_shape") is not None:
            input_shape = tuple(kwargs["batch_input_shape"])[1:]
        self.layer_name = name or _unique_name(_snake(type(self).__name__))
        self.declared_input_shape = tuple(input_shape) if input_shape is not None else None
        self.built, self.trainable_flag = False, trainable
        self.input_shape_built: tuple | None = None

    @property
    def name(self) -> str:
        return self.layer_name

    # -- build / shapes --------------------------------------------------------------------

    def build(self, input_shape: tuple) -> None:
        self.built = True

    def _ensure_built(self, input_shape: tuple) -> None:
        if not self.built:
            self.input_shape_built = tuple(input_shape)
            self.build(tuple(input_shape))
            self.built = True
            if not self.trainable_flag:
                for p in self.parameters():
                    p.requires_grad_(False)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def compute_mask(self, inputs, mask):
        return mask if self.supports_masking else None

    # -- calls -----------------------------------------------------------------------------

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, KerasTensor) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], KerasTensor)):
            return self._symbolic_call(inputs, **kwargs)
        return self.run(inputs, kwargs.pop("mask", None), *args, **kwargs)[0]

    def _symbolic_call(self, inputs, **kwargs):
        if kwargs.get("initial_state") is not None:
            raise RnnlabError("initial_state in a functional model is not supported by rnnlab.keras yet")
        shapes = [t.shape for t in inputs] if isinstance(inputs, (list, tuple)) else inputs.shape
        self._ensure_built(shapes)
        out_shape = self.compute_output_shape(shapes)
        in_list = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        has_mask = any(t.has_mask for t in in_list)
        if isinstance(out_shape, list):
            return [KerasTensor(s, self, in_list, i) for i, s in enumerate(out_shape)]
        return KerasTensor(out_shape, self, in_list, 0, has_mask=has_mask or self._makes_mask())

    def _makes_mask(self) -> bool:
        return False

    def run(self, inputs, mask=None, training=None):
        """``(outputs, mask)``: the eager call used by models (``outputs`` may be a list)."""
        shape = [tuple(t.shape) for t in inputs] if isinstance(inputs, (list, tuple)) else tuple(inputs.shape)
        self._ensure_built(shape if isinstance(shape, list) else (None, *shape[1:]))
        out = self.call(inputs, mask=mask)
        return out, self.compute_mask(inputs, mask)

    def call(self, inputs, mask=None):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- saving ----------------------------------------------------------------------------

    def get_config(self) -> dict:
        cfg = {"name": self.layer_name, "trainable": self.trainable_flag}
        if self.declared_input_shape is not None:
            cfg["input_shape"] = list(self.declared_input_shape)
        return cfg

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class InputLayer(Layer):
    def __init__(self, shape=None, dtype="float32", name=None, **kwargs):
        super().__init__(name=name or _unique_name("input_layer"), input_shape=shape)
        self.dtype_name = dtype
        self.built = True

    def call(self, inputs, mask=None):
        return inputs

    def get_config(self):
        return {"name": self.layer_name, "shape": list(self.declared_input_shape), "dtype": self.dtype_name}


# ---------------------------------------------------------------------------------------------
# Core layers
# ---------------------------------------------------------------------------------------------


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis (works per step on 3-D inputs, as in Keras)."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise RnnlabError(f"Dense: units must be a positive int, got {units!r}")
        self.units, self.activation_name, self.use_bias = units, activation, use_bias
        self.activation = get_activation(activation)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise RnnlabError(f"Dense needs a known last dimension, got input shape {input_shape}")
        self.linear = nn.Linear(int(input_shape[-1]), self.units, bias=self.use_bias)
        nn.init.xavier_uniform_(self.linear.weight)  # Keras' glorot_uniform
        if self.use_bias:
            nn.init.zeros_(self.linear.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def call(self, inputs, mask=None):
        return self.activation(self.linear(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name, "use_bias": self.use_bias}


class Activation(Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation_name, self.activation = activation, get_activation(activation)

    def call(self, inputs, mask=None):
        return self.activation(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation_name}


class Dropout(Layer):
    """Zero a fraction ``rate`` of inputs while training (scaled by 1/(1-rate)); identity at inference."""

    def __init__(self, rate: float, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise RnnlabError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def call(self, inputs, mask=None):
        return F.dropout(inputs, self.rate, self.training)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class Flatten(Layer):
    supports_masking = False

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))

    def call(self, inputs, mask=None):
        return inputs.reshape(inputs.shape[0], -1)


class RepeatVector(Layer):
    """``(batch, features) -> (batch, n, features)``: feeds one vector to every decoder step."""

    supports_masking = False

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[-1])

    def call(self, inputs, mask=None):
        return inputs.unsqueeze(1).expand(-1, self.n, -1)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class Concatenate(Layer):
    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def compute_output_shape(self, input_shape):
        shapes = list(input_shape)
        axis = self.axis % len(shapes[0])
        dims = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if None in dims else sum(dims)
        return tuple(out)

    def compute_mask(self, inputs, mask):
        return None

    def call(self, inputs, mask=None):
        return torch.cat(list(inputs), dim=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Embedding(Layer):
    """Integer ids -> vectors. ``mask_zero=True``: id 0 is padding and masks its step downstream."""

    supports_masking = False

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim, self.mask_zero = input_dim, output_dim, mask_zero

    def build(self, input_shape):
        self.embedding = nn.Embedding(self.input_dim, self.output_dim)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras' default

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def _makes_mask(self):
        return self.mask_zero

    def compute_mask(self, inputs, mask):
        return (inputs != 0) if self.mask_zero else None

    def call(self, inputs, mask=None):
        if inputs.is_floating_point():
            inputs = inputs.long()
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= self.input_dim):
            raise RnnlabError(f"Embedding: ids must be in [0, {self.input_dim - 1}] (input_dim={self.input_dim}), "
                              f"got range [{int(inputs.min())}, {int(inputs.max())}]")
        return self.embedding(inputs)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim, "mask_zero": self.mask_zero}


class Masking(Layer):
    """Mask every step whose features all equal ``mask_value`` (and zero it)."""

    def __init__(self, mask_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value

    def _makes_mask(self):
        return True

    def compute_mask(self, inputs, mask):
        return (inputs != self.mask_value).any(-1)

    def call(self, inputs, mask=None):
        keep = (inputs != self.mask_value).any(-1, keepdim=True)
        return inputs * keep.to(inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


class TimeDistributed(Layer):
    """Apply ``layer`` to every time step: ``(B, T, ...) -> (B, T, ...)``."""

    def __init__(self, layer: Layer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, Layer):
            raise RnnlabError(f"TimeDistributed wraps an rnnlab.keras layer, got {type(layer).__name__}")
        self.layer = layer

    def build(self, input_shape):
        self.layer._ensure_built((input_shape[0], *input_shape[2:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((input_shape[0], *input_shape[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])

    def call(self, inputs, mask=None):
        b, t = inputs.shape[:2]
        out = self.layer.call(inputs.reshape(b * t, *inputs.shape[2:]))
        return out.reshape(b, t, *out.shape[1:])

    def get_config(self):
        return {**super().get_config(), "layer": serialize(self.layer)}


# ---------------------------------------------------------------------------------------------
# Recurrent layers
# ---------------------------------------------------------------------------------------------


def _compact(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move each sequence's unmasked steps to the front; returns (x', lengths, order).

    Skipping masked steps (Keras' semantics) is then the same as running over ``lengths`` steps.
    """
    t = torch.arange(mask.shape[1], device=mask.device)
    key = torch.where(mask, t, t + mask.shape[1])  # unmasked first, original order kept
    order = key.argsort(dim=1)
    x = x.gather(1, order.unsqueeze(-1).expand_as(x))
    return x, mask.sum(1), order


def _uncompact(seq: Tensor, order: Tensor, lengths: Tensor) -> Tensor:
    out = torch.zeros_like(seq)
    return out.scatter(1, order.unsqueeze(-1).expand_as(seq), rl.mask_padding(seq, lengths))


class _RNNLayer(Layer):
    """Shared by SimpleRNN, LSTM and GRU (Keras' ``RNN`` base)."""

    torch_cls: type = rl.RNN
    n_states = 1
    gates = 1
    supports_masking = True

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 unroll: bool = False, unit_forget_bias: bool = True, reset_after: bool = True,
                 impl: str = "auto", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        if not isinstance(units, int) or units <= 0:
            raise RnnlabError(f"{name}: units must be a positive int, got {units!r}")
        allowed = ("tanh", "relu") if self.torch_cls is rl.RNN else ("tanh",)
        if activation not in allowed:
            raise RnnlabError(f"{name}: activation must be one of {allowed} in rnnlab, got {activation!r}")
        if recurrent_activation != "sigmoid":
            raise RnnlabError(f"{name}: recurrent_activation must be 'sigmoid' in rnnlab, got {recurrent_activation!r}")
        if self.torch_cls is rl.GRU and not reset_after:
            raise RnnlabError("GRU: rnnlab implements reset_after=True (Keras' and cuDNN's default), got False")
        for arg, v in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= v < 1.0:
                raise RnnlabError(f"{name}: {arg} must be in [0, 1), got {v}")
        self.units, self.activation_name, self.use_bias = units, activation, use_bias
        self.return_sequences, self.return_state, self.go_backwards = return_sequences, return_state, go_backwards
        self.stateful, self.dropout_rate, self.recurrent_dropout = stateful, float(dropout), float(recurrent_dropout)
        self.unit_forget_bias, self.impl = unit_forget_bias, impl
        self.bidirectional = False  # set by Bidirectional
        self._states: tuple | None = None

    # -- build -----------------------------------------------------------------------------

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise RnnlabError(f"{type(self).__name__} expects input of shape (batch, timesteps, features), "
                              f"got {tuple(input_shape)}")
        kw = {"bidirectional": self.bidirectional, "impl": self.impl, "bias": self.use_bias}
        if self.torch_cls is rl.RNN:
            kw["nonlinearity"] = self.activation_name
        self.rnn = self.torch_cls(int(input_shape[-1]), self.units, **kw)
        self._keras_init()

    def _keras_init(self) -> None:
        """glorot_uniform kernel, orthogonal recurrent kernel (per gate), zero biases, forget bias 1."""
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)  # fan_in = features, fan_out = gates*units, as Keras
                elif name.startswith("weight_hh"):
                    for g in range(self.gates):
                        nn.init.orthogonal_(p[g * self.units:(g + 1) * self.units])
                else:
                    nn.init.zeros_(p)
                    if self.torch_cls is rl.LSTM and self.unit_forget_bias and name.startswith("bias_ih"):
                        p[self.units:2 * self.units] = 1.0

    def compute_output_shape(self, input_shape):
        d = 2 if self.bidirectional else 1
        out = (input_shape[0], input_shape[1], d * self.units) if self.return_sequences else (input_shape[0], d * self.units)
        if self.return_state:
            return [out] + [(input_shape[0], self.units)] * (self.n_states * d)
        return out

    def compute_mask(self, inputs, mask):
        return mask if (self.return_sequences and mask is not None) else None

    # -- state -----------------------------------------------------------------------------

    def reset_states(self, states=None) -> None:
        self._states = states

    def _initial_state(self, batch: int, initial_state):
        if initial_state is not None:
            states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
            states = [s.unsqueeze(0) if s.dim() == 2 else s for s in states]
            return tuple(states) if self.n_states == 2 else states[0]
        if self.stateful and self._states is not None:
            ref = self._states[0] if isinstance(self._states, tuple) else self._states
            if ref.shape[1] != batch:
                raise RnnlabError(f"{type(self).__name__}(stateful=True) keeps a state for batch size {ref.shape[1]}, "
                                  f"got a batch of {batch}; use a fixed batch_size (and shuffle=False)")
            return self._states
        return None

    # -- forward ---------------------------------------------------------------------------

    def run(self, inputs, mask=None, training=None, initial_state=None):
        self._ensure_built((None, *inputs.shape[1:]))
        out = self.call(inputs, mask=mask, initial_state=initial_state)
        return out, self.compute_mask(inputs, mask)

    def call(self, inputs, mask=None, initial_state=None):
        x = inputs
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        if self.dropout_rate and self.training:
            # Keras drops the same input features at every step of a sequence.
            keep = F.dropout(x.new_ones(x.shape[0], 1, x.shape[2]), self.dropout_rate, True)
            x = x * keep
        order = lengths = None
        if mask is not None:
            mask = mask.to(torch.bool)
            x, lengths, order = _compact(x, mask)
            empty = lengths == 0
            lengths = lengths.clamp(min=1)
        hx = self._initial_state(x.shape[0], initial_state)
        if self.recurrent_dropout and self.training:
            seq, states = self._recurrent_dropout_forward(x, hx, lengths)
        else:
            seq, states = self.rnn(x, hx, lengths=lengths)
        if mask is not None:
            seq = _uncompact(seq, order, lengths)
            if empty.any():  # an all-masked sequence keeps its initial (zero) state
                keep = (~empty).to(seq.dtype)
                states = tuple(s * keep.view(1, -1, 1) for s in states) if isinstance(states, tuple) else states * keep.view(1, -1, 1)
        if self.stateful:
            self._states = tuple(s.detach() for s in states) if isinstance(states, tuple) else states.detach()
        out = seq if self.return_sequences else self._last(seq, states)
        if not self.return_state:
            return out
        state_list = list(states) if isinstance(states, tuple) else [states]
        # (layers*dirs, B, H) -> one (B, H) tensor per state per direction, in Keras' order
        d = 2 if self.bidirectional else 1
        flat = [s[k] for k in range(d) for s in state_list]
        return [out, *flat]

    def _last(self, seq: Tensor, states) -> Tensor:
        h = states[0] if isinstance(states, tuple) else states
        return torch.cat([h[-2], h[-1]], -1) if self.bidirectional else h[-1]

    def _recurrent_dropout_forward(self, x, hx, lengths):
        """Keras' recurrent_dropout: one dropout mask on h per sequence, reused at every step."""
        if self.bidirectional:
            raise RnnlabError("recurrent_dropout inside Bidirectional is not supported in rnnlab; use dropout")
        B = x.shape[0]
        w_ih, w_hh, b_ih, b_hh = self.rnn._weights(0, 0)
        xw = F.linear(x, w_ih, b_ih)
        keep = F.dropout(x.new_ones(B, self.units), self.recurrent_dropout, True)
        h = x.new_zeros(B, self.units) if hx is None else (hx[0][0] if isinstance(hx, tuple) else hx[0])
        c = x.new_zeros(B, self.units) if hx is None or not isinstance(hx, tuple) else hx[1][0]
        hs, cs = [], []
        for xw_t in xw.unbind(1):
            if self.torch_cls is rl.LSTM:
                h, c = lstm_step(xw_t, h * keep, c, w_hh, b_hh)
                cs.append(c)
            elif self.torch_cls is rl.GRU:
                h = gru_step(xw_t, h * keep, w_hh, b_hh)
            else:
                h = rnn_step(xw_t, h * keep, w_hh, b_hh, self.activation_name)
            hs.append(h)
        seq = torch.stack(hs, 1)
        h_n = rl.last_step(seq, lengths).unsqueeze(0)
        seq = rl.mask_padding(seq, lengths)
        if self.torch_cls is rl.LSTM:
            return seq, (h_n, rl.last_step(torch.stack(cs, 1), lengths).unsqueeze(0))
        return seq, h_n

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation_name, "use_bias": self.use_bias,
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "stateful": self.stateful, "dropout": self.dropout_rate,
                "recurrent_dropout": self.recurrent_dropout, "impl": self.impl}


class SimpleRNN(_RNNLayer):
    """Keras ``SimpleRNN``: ``h_t = activation(W x_t + U h_{t-1} + b)`` (rnnlab.RNN underneath)."""

    torch_cls, n_states, gates = rl.RNN, 1, 1


class LSTM(_RNNLayer):
    """Keras ``LSTM`` (rnnlab.LSTM underneath; gates i, f, g, o)."""

    torch_cls, n_states, gates = rl.LSTM, 2, 4


class GRU(_RNNLayer):
    """Keras ``GRU`` with ``reset_after=True`` (rnnlab.GRU underneath; gates r, z, n)."""

    torch_cls, n_states, gates = rl.GRU, 1, 3


class Bidirectional(Layer):
    """Run ``layer`` forwards and backwards in time and merge (``concat``, ``sum``, ``mul``, ``ave``)."""

    def __init__(self, layer: _RNNLayer, merge_mode: str | None = "concat", backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, _RNNLayer):
            raise RnnlabError(f"Bidirectional wraps SimpleRNN, LSTM or GRU, got {type(layer).__name__}")
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise RnnlabError(f"Bidirectional: merge_mode must be 'concat', 'sum', 'mul' or 'ave', got {merge_mode!r}")
        if layer.go_backwards:
            raise RnnlabError("Bidirectional: the wrapped layer must not set go_backwards")
        self.layer, self.merge_mode = layer, merge_mode
        layer.bidirectional = True

    def build(self, input_shape):
        self.layer._ensure_built(input_shape)

    def compute_output_shape(self, input_shape):
        shapes = self.layer.compute_output_shape(input_shape)
        if self.merge_mode != "concat":
            shape = shapes[0] if isinstance(shapes, list) else shapes
            half = (*shape[:-1], shape[-1] // 2)
            return [half, *shapes[1:]] if isinstance(shapes, list) else half
        return shapes

    def compute_mask(self, inputs, mask):
        return self.layer.compute_mask(inputs, mask)

    def call(self, inputs, mask=None):
        out = self.layer.call(inputs, mask=mask)
        if self.merge_mode == "concat":
            return out
        main = out[0] if isinstance(out, list) else out
        fwd, bwd = main.chunk(2, dim=-1)
        merged = {"sum": fwd + bwd, "mul": fwd * bwd, "ave": (fwd + bwd) / 2}[self.merge_mode]
        return [merged, *out[1:]] if isinstance(out, list) else merged

    def reset_states(self, states=None):
        self.layer.reset_states(states)

    def get_config(self):
        return {**super().get_config(), "layer": serialize(self.layer), "merge_mode": self.merge_mode}


# ---------------------------------------------------------------------------------------------
# (De)serialisation: JSON configs only, never pickle
# ---------------------------------------------------------------------------------------------

LAYER_CLASSES = {cls.__name__: cls for cls in (
    InputLayer, Dense, Activation, Dropout, Flatten, RepeatVector, Concatenate, Embedding, Masking,
    TimeDistributed, SimpleRNN, LSTM, GRU, Bidirectional,
)}


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(spec: dict) -> Layer:
    name = spec.get("class_name")
    if name not in LAYER_CLASSES:
        raise RnnlabError(f"unknown layer class {name!r} in model config; known: {sorted(LAYER_CLASSES)}")
    cfg = dict(spec.get("config", {}))
    if "layer" in cfg:
        cfg["layer"] = deserialize(cfg["layer"])
    if name == "InputLayer":
        return InputLayer(shape=tuple(cfg["shape"]), dtype=cfg.get("dtype", "float32"), name=cfg.get("name"))
    if "input_shape" in cfg:
        cfg["input_shape"] = tuple(cfg["input_shape"])
    return LAYER_CLASSES[name](**cfg)
