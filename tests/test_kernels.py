"""The fused paths give the reference numbers: outputs, final states and every gradient within 1e-5,
for RNN (tanh, relu), GRU, LSTM, CTRNN (activations, Dale's law, mask, noise) and minGRU/minLSTM
(log-space scan and fused sequential loop vs the Python step loop)."""
import pytest
import torch

import rnnlab
from rnnlab import kernels
from rnnlab.errors import RnnlabError
from rnnlab.layers import lstm_scan_reference

B, T, I, H = 3, 9, 5, 6
LENGTHS = torch.tensor([9, 4, 1])
TOL = {"atol": 1e-5, "rtol": 1e-5}

needs_ext = pytest.mark.skipif(not kernels.AVAILABLE, reason="C++ kernels not built (python -m rnnlab.build_kernels)")


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _run(layer, x, hx, lengths, weights):
    out, state = layer(x, hx, lengths=lengths)
    loss = (out * weights).sum() + sum(s.pow(2).sum() for s in _flat(state))
    params = [p for p in layer.parameters() if p.requires_grad]
    hs = list(hx) if isinstance(hx, tuple) else [hx]
    grads = torch.autograd.grad(loss, [x, *hs, *params])
    return [out, *_flat(state), *grads]


def _assert_same(a, b):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        torch.testing.assert_close(u, v, **TOL, msg=lambda m: f"item {k}: {m}")


@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_fused_matches_reference(kind, use_lengths):
    cls = {"rnn_tanh": rnnlab.RNN, "rnn_relu": rnnlab.RNN, "gru": rnnlab.GRU, "lstm": rnnlab.LSTM}[kind]
    extra = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    ref = cls(I, H, num_layers=2, bidirectional=True, impl="reference", **extra)
    fused = cls(I, H, num_layers=2, bidirectional=True, impl="fused", **extra)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, requires_grad=True)
    h0 = torch.randn(4, B, H, requires_grad=True)
    hx = (h0, torch.randn(4, B, H, requires_grad=True)) if kind == "lstm" else h0
    w = torch.randn(B, T, 2 * H)
    lengths = LENGTHS if use_lengths else None
    _assert_same(_run(ref, x, hx, lengths, w), _run(fused, x, hx, lengths, w))


@needs_ext
def test_fused_uses_the_cpp_kernels_on_cpu():
    x = torch.randn(2, 3, I)
    assert rnnlab.GRU(I, H, impl="fused")._choose_impl(x) == "kernels"
    assert rnnlab.RNN(I, H, impl="auto")._choose_impl(x) == "kernels"
    assert rnnlab.GRU(I, H, impl="fused", dtype=torch.float64)._choose_impl(x.double()) == "native"


@pytest.mark.parametrize(
    "activation,dale_ratio,noise_std,self_connections",
    [("relu", None, 0.0, True), ("tanh", 0.8, 0.0, False), ("softplus", 0.8, 0.0, True), ("relu", 0.8, 0.1, True)],
)
def test_ctrnn_fused_matches_reference(activation, dale_ratio, noise_std, self_connections):
    kw = dict(num_layers=2, activation=activation, dale_ratio=dale_ratio, noise_std=noise_std,
              self_connections=self_connections, dt=20.0, tau=100.0)
    ref = rnnlab.CTRNN(I, H, impl="reference", **kw)
    fused = rnnlab.CTRNN(I, H, impl="fused", **kw)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, requires_grad=True)
    hx = torch.randn(2, B, H, requires_grad=True)
    w = torch.randn(B, T, H)
    torch.manual_seed(3)  # the same noise draws for both
    a = _run(ref, x, hx, LENGTHS, w)
    torch.manual_seed(3)
    b = _run(fused, x, hx, LENGTHS, w)
    _assert_same(a, b)


@needs_ext
def test_lstm_kernel_matches_reference_scan():
    xw = torch.randn(B, T, 4 * H, requires_grad=True)
    h0, c0 = torch.randn(B, H, requires_grad=True), torch.randn(B, H, requires_grad=True)
    w_hh, b_hh = torch.randn(4 * H, H, requires_grad=True), torch.randn(4 * H, requires_grad=True)
    gh, gc = torch.randn(B, T, H), torch.randn(B, T, H)
    results = []
    for fn in (lstm_scan_reference, kernels.lstm_scan):
        h, c = fn(xw, h0, c0, w_hh, b_hh)
        results.append([h, c, *torch.autograd.grad((h * gh).sum() + (c * gc).sum(), [xw, h0, c0, w_hh, b_hh])])
    _assert_same(*results)


@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("cls", [rnnlab.MinGRU, rnnlab.MinLSTM])
def test_min_rnn_modes_agree(cls, use_lengths):
    base = cls(I, H, num_layers=2)
    x = torch.randn(B, T, I, requires_grad=True)
    hx = torch.randn(2, B, H, requires_grad=True)
    w = torch.randn(B, T, H)
    lengths = LENGTHS if use_lengths else None
    results = {}
    for mode in ("reference", "sequential", "scan", "auto"):
        layer = cls(I, H, num_layers=2, mode=mode)
        layer.load_state_dict(base.state_dict())
        results[mode] = _run(layer, x, hx, lengths, w)
        assert layer.chosen_mode == (layer.choose_mode(x) if mode == "auto" else mode)
    for mode in ("sequential", "scan", "auto"):
        _assert_same(results["reference"], results[mode])


def test_min_rnn_state_and_lengths():
    layer = rnnlab.MinGRU(I, H, mode="sequential")
    x = torch.randn(B, T, I)
    out, h_n = layer(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        alone, h_alone = layer(x[b:b + 1, :n])
        torch.testing.assert_close(out[b, :n], alone[0], **TOL)
        torch.testing.assert_close(h_n[0, b], h_alone[0, 0], **TOL)
        assert out[b, n:].abs().sum() == 0
    # carrying the state across two halves gives the whole-sequence numbers
    first, h = layer(x[:, :4])
    second, _ = layer(x[:, 4:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), layer(x)[0], **TOL)


def test_min_rnn_auto_mode_and_errors():
    layer = rnnlab.MinLSTM(I, H)
    layer(torch.randn(2, 3, I))
    assert layer.chosen_mode == ("sequential" if kernels.AVAILABLE else "reference")
    assert layer.choose_mode(torch.randn(2, 100, I, dtype=torch.float64)) == "scan"
    with pytest.raises(RnnlabError, match="mode must be one of"):
        rnnlab.MinGRU(I, H, mode="parallel")
    with pytest.raises(RnnlabError, match=r"features=5.*got shape \(2, 3, 4\)"):
        rnnlab.MinGRU(I, H)(torch.randn(2, 3, 4))
