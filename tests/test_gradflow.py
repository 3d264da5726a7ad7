"""Gradient flow through time: the per-step states are the layer's, and the norms show vanishing."""
import pytest
import torch

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.gradflow import gradient_norms_over_time, hidden_states_with_grad
from rnnlab.tasks.gradients import profile


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
def test_states_are_the_layer_outputs(cls):
    layer = cls(2, 5)
    x = torch.randn(3, 7, 2)
    states = torch.stack(hidden_states_with_grad(layer, x), 1)
    torch.testing.assert_close(states, layer(x)[0], atol=1e-6, rtol=1e-5)


def test_norms_match_autograd_and_decay_backwards():
    torch.manual_seed(0)
    layer = rnnlab.RNN(1, 8)
    x = torch.randn(4, 30, 1)
    norms = gradient_norms_over_time(layer, x, lambda hs: hs[-1].sum())
    assert norms[-1] == pytest.approx(8 ** 0.5)  # d(sum h_T)/dh_T is all ones
    assert norms[0] < 1e-3 * norms[-1]  # vanished over 30 tanh steps


def test_lstm_keeps_more_gradient_than_simple_rnn_at_init():
    assert profile("LSTM", 50, 0)[0] / profile("LSTM", 50, 0)[-1] > 1e3 * (profile("SimpleRNN", 50, 0)[0] / profile("SimpleRNN", 50, 0)[-1])


def test_only_simple_layers():
    with pytest.raises(RnnlabError, match="one-layer, one-direction"):
        hidden_states_with_grad(rnnlab.GRU(2, 3, bidirectional=True), torch.randn(1, 2, 2))
