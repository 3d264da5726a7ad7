"""Gradient flow through time: the vanishing / exploding gradient problem made visible.

Backpropagation through time multiplies the gradient by the recurrent Jacobian once per step::

    dL/dh_t = dL/dh_{t+1} * dh_{t+1}/dh_t,   dh_{t+1}/dh_t = diag(f'(.)) W_hh   (plain RNN)

so ``||dL/dh_t||`` shrinks (|eigenvalues| < 1, saturating tanh) or grows (> 1) geometrically as
``t`` moves away from the loss (Bengio et al. 1994; Pascanu et al. 2013). LSTM and GRU add a
gated, additive path (``c_t = f_t * c_{t-1} + ...``) along which the gradient can pass almost
unchanged; gradient clipping caps the update when the gradient explodes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.cells import gru_step, lstm_step, rnn_step
from rnnlab.errors import RnnlabError
from rnnlab.layers import GRU, LSTM, RNN


def hidden_states_with_grad(layer, x: Tensor) -> list[Tensor]:
    """Run a one-layer, one-direction rnnlab RNN/LSTM/GRU step by step, keeping every ``h_t``'s gradient."""
    if not isinstance(layer, (RNN, LSTM, GRU)) or layer.num_layers != 1 or layer.bidirectional:
        raise RnnlabError(f"gradient flow needs a one-layer, one-direction rnnlab RNN/LSTM/GRU, got {layer!r}")
    w_ih, w_hh, b_ih, b_hh = layer._weights(0, 0)
    xw = F.linear(x, w_ih, b_ih)
    h = x.new_zeros(x.shape[0], layer.hidden_size)
    c = torch.zeros_like(h)
    states = []
    for xw_t in xw.unbind(1):
        if isinstance(layer, LSTM):
            h, c = lstm_step(xw_t, h, c, w_hh, b_hh)
        elif isinstance(layer, GRU):
            h = gru_step(xw_t, h, w_hh, b_hh)
        else:
            h = rnn_step(xw_t, h, w_hh, b_hh, layer.nonlinearity)
        h.retain_grad()
        states.append(h)
    return states


def gradient_norms_over_time(layer, x: Tensor, loss_fn: Callable[[list[Tensor]], Tensor]) -> Tensor:
    """``||dL/dh_t||`` (mean over the batch) for every step ``t``; ``loss_fn`` maps the list of ``h_t`` to L."""
    states = hidden_states_with_grad(layer, x)
    loss = loss_fn(states)
    loss.backward()
    return torch.stack([h.grad.norm(dim=-1).mean() for h in states]).detach()
