"""The continuous-time rate network: its equation, Dale's law, masks, noise, fixed weights."""
import math

import pytest
import torch

import rnnlab
from rnnlab.errors import RnnlabError


def test_step_is_the_euler_equation():
    cell = rnnlab.CTRNNCell(3, 5, dt=10, tau=50, activation="tanh")
    u, x = torch.randn(2, 3), torch.randn(2, 5)
    alpha = 10 / 50
    expected = (1 - alpha) * x + alpha * (torch.tanh(x) @ cell.weight_hh.T + u @ cell.weight_ih.T + cell.bias)
    r, x_new = cell(u, x)
    torch.testing.assert_close(x_new, expected)
    torch.testing.assert_close(r, torch.tanh(expected))


@pytest.mark.parametrize("impl", ["reference", "auto"])
def test_layer_equals_cell_loop(impl):
    layer = rnnlab.CTRNN(3, 8, dt=20, tau=100, activation="softplus", impl=impl)
    u = torch.randn(4, 6, 3)
    rates, x_n = layer(u)
    x, rs = torch.zeros(4, 8), []
    for t in range(6):
        r, x = layer.cell(u[:, t], x)
        rs.append(r)
    torch.testing.assert_close(rates, torch.stack(rs, 1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x_n[0], x, atol=1e-6, rtol=1e-5)


def test_dale_law_keeps_signs_after_training():
    layer = rnnlab.CTRNN(2, 10, dale_ratio=0.8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(20):
        rates, _ = layer(torch.randn(8, 5, 2))
        loss = (rates - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = layer.cell.recurrent_weight().detach()
    assert (w[:, :8] >= 0).all() and (w[:, 8:] <= 0).all()  # column j = outgoing weights of unit j
    assert (w[:, :8] > 0).any() and (w[:, 8:] < 0).any()


def test_mask_no_self_connections_and_fixed_weights():
    mask = torch.ones(4, 4)
    mask[0, 1] = 0
    cell = rnnlab.CTRNNCell(2, 4, mask=mask, self_connections=False, train_recurrent=False)
    w = cell.recurrent_weight()
    assert w[0, 1] == 0 and torch.all(torch.diagonal(w) == 0)
    assert not cell.weight_hh.requires_grad and cell.weight_ih.requires_grad


def test_noise_scale_is_sqrt_2_alpha_sigma():
    cell = rnnlab.CTRNNCell(1, 2000, dt=10, tau=100, noise_std=0.5)
    n = cell.noise((1, 2000), torch.zeros(1))
    assert abs(n.std().item() - math.sqrt(2 * 0.1) * 0.5) < 0.02


def test_errors():
    with pytest.raises(RnnlabError, match="dt <= tau"):
        rnnlab.CTRNNCell(2, 3, dt=200, tau=100)
    with pytest.raises(RnnlabError, match="bidirectional"):
        rnnlab.CTRNN(2, 3, bidirectional=True)
    with pytest.raises(RnnlabError, match="dale_ratio"):
        rnnlab.CTRNNCell(2, 3, dale_ratio=1.5)


def test_rate_and_weight_regularisers():
    layer = rnnlab.CTRNN(2, 6, dale_ratio=0.5, self_connections=False)
    rates, _ = layer(torch.randn(3, 4, 2))
    torch.testing.assert_close(layer.rate_penalty(rates), rates.pow(2).mean())
    w = layer.cell.recurrent_weight()
    torch.testing.assert_close(layer.weight_penalty(), w.pow(2).mean())
    (layer.rate_penalty(rates) + layer.weight_penalty()).backward()
    assert layer.cell.weight_hh.grad is not None and torch.all(torch.diagonal(layer.cell.weight_hh.grad) == 0)
