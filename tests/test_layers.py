"""The shared layer harness: every rnnlab layer against torch.nn at the same weights.

Outputs, final states and every parameter gradient must match within 1e-5 (float32), for
RNN (tanh, relu) / LSTM / GRU x num_layers {1, 2} x bidirectional x {full, variable lengths}
x impl {reference, fused}.
"""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab
from rnnlab.errors import RnnlabError

KINDS = {
    "rnn_tanh": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, torch.nn.LSTM, {}),
    "gru": (rnnlab.GRU, torch.nn.GRU, {}),
}
B, T, I, H = 4, 7, 5, 6
LENGTHS = torch.tensor([7, 3, 1, 5])


def _pair(kind, num_layers, bidirectional, impl, dtype=torch.float32):
    ours_cls, torch_cls, extra = KINDS[kind]
    ours = ours_cls(I, H, num_layers=num_layers, bidirectional=bidirectional, impl=impl, dtype=dtype, **extra)
    ref = torch_cls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dtype=dtype, **extra)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _torch_forward(ref, x, hx, lengths):
    if lengths is None:
        return ref(x, hx)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = ref(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize(
    "kind,num_layers,bidirectional,use_lengths,impl",
    list(itertools.product(KINDS, [1, 2], [False, True], [False, True], ["reference", "fused"])),
)
def test_matches_torch_nn(kind, num_layers, bidirectional, use_lengths, impl):
    ours, ref = _pair(kind, num_layers, bidirectional, impl)
    x = torch.randn(B, T, I)
    lengths = LENGTHS if use_lengths else None
    d = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * d, B, H)
    hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    out, state = ours(x, hx, lengths=lengths)
    out_ref, state_ref = _torch_forward(ref, x, hx, lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    for s, s_ref in zip(_flat(state), _flat(state_ref)):
        torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
    # gradients of a loss touching outputs and every final state
    weights = torch.randn_like(out)
    loss = (out * weights).sum() + sum(s.pow(2).sum() for s in _flat(state))
    loss_ref = (out_ref * weights).sum() + sum(s.pow(2).sum() for s in _flat(state_ref))
    loss.backward()
    loss_ref.backward()
    for (name, p), (_, p_ref) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-5, msg=f"grad of {name}")


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_reference_float64(kind):
    ours, _ = _pair(kind, 2, True, "reference", torch.float64)
    x = torch.randn(2, 4, I, dtype=torch.float64, requires_grad=True)

    def f(inp):
        out, state = ours(inp, lengths=torch.tensor([4, 2]))
        return out.sum() + sum(s.sum() for s in _flat(state))

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)
    params = [p for p in ours.parameters()][:4]
    assert torch.autograd.gradcheck(lambda *ps: _call_with(ours, ps, x.detach()), tuple(params), eps=1e-6, atol=1e-5)


def _call_with(module, params, x):
    names = [n for n, _ in module.named_parameters()][: len(params)]
    out, _ = torch.func.functional_call(module, dict(zip(names, params)), (x,))
    return out.pow(2).sum()


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_loads_both_ways(kind):
    ours, ref = _pair(kind, 2, True, "auto")
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref2 = KINDS[kind][1](I, H, num_layers=2, bidirectional=True, batch_first=True, **KINDS[kind][2])
    ours.load_state_dict(ref2.state_dict())
    x = torch.randn(2, 3, I)
    torch.testing.assert_close(ours(x)[0], ref2(x)[0])


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(name):
    ours = getattr(rnnlab, name)(I, H)
    ref = getattr(torch.nn, name)(I, H)
    ref.load_state_dict(ours.state_dict())
    x, h = torch.randn(3, I), torch.randn(3, H)
    hx = (h, torch.randn(3, H)) if name == "LSTMCell" else h
    a, b = ours(x, hx), ref(x, hx)
    for u, v in zip(_flat(a), _flat(b)):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-6)
    # unbatched input, as torch allows
    for u, v in zip(_flat(ours(x[0])), _flat(ref(x[0]))):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-6)


def test_batch_first_false_and_single_step_state_passing():
    layer = rnnlab.GRU(I, H, batch_first=False)
    x = torch.randn(T, B, I)
    out, h = layer(x)
    assert out.shape == (T, B, H)
    # one step at a time with the state gives the same numbers as the whole sequence
    step_layer = rnnlab.GRU(I, H)
    step_layer.load_state_dict(layer.state_dict())
    xb = x.transpose(0, 1)
    h_step, outs = None, []
    for t in range(T):
        o, h_step = step_layer(xb[:, t:t + 1], h_step)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), out.transpose(0, 1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU, rnnlab.CTRNN])
def test_clear_errors(cls):
    layer = cls(I, H)
    with pytest.raises(RnnlabError, match=r"3-D input .*features=5.*got shape \(4, 5\)"):
        layer(torch.randn(4, 5))
    with pytest.raises(RnnlabError, match=r"features=5.*got shape \(2, 3, 9\)"):
        layer(torch.randn(2, 3, 9))
    with pytest.raises(RnnlabError, match=r"lengths must be in \[1, 3\].*max 4"):
        layer(torch.randn(2, 3, I), lengths=[4, 1])
    with pytest.raises(RnnlabError, match=r"lengths must have shape \(2,\)"):
        layer(torch.randn(2, 3, I), lengths=[3])
    with pytest.raises(RnnlabError, match="empty batch"):
        layer(torch.randn(0, 3, I))
    with pytest.raises(RnnlabError, match="zero-length"):
        layer(torch.randn(2, 0, I))
    with pytest.raises(RnnlabError, match="floating-point"):
        layer(torch.ones(2, 3, I, dtype=torch.long))
    bad = torch.randn(1, 5, H)
    with pytest.raises(RnnlabError, match=r"must have shape \(1, 2, 6\).*got \(1, 5, 6\)"):
        layer(torch.randn(2, 3, I), (bad, bad) if cls is rnnlab.LSTM else bad)


def test_bad_constructor_arguments():
    with pytest.raises(RnnlabError, match="hidden_size must be a positive int, got 0"):
        rnnlab.LSTM(3, 0)
    with pytest.raises(RnnlabError, match="impl must be one of"):
        rnnlab.GRU(3, 4, impl="fast")
    with pytest.raises(RnnlabError, match="nonlinearity must be one of"):
        rnnlab.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(RnnlabError, match="dropout must be"):
        rnnlab.LSTM(3, 4, dropout=1.5)


def test_fused_and_reference_agree_with_dropout_off_in_eval():
    a = rnnlab.LSTM(I, H, num_layers=2, dropout=0.5, impl="reference")
    b = rnnlab.LSTM(I, H, num_layers=2, dropout=0.5, impl="fused")
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(B, T, I)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-5)
    a.train()
    torch.manual_seed(1)
    y1 = a(x)[0]
    torch.manual_seed(1)
    y2 = a(x)[0]
    torch.testing.assert_close(y1, y2)  # dropout between layers draws from the one seed
    a.eval()
    assert not torch.allclose(y1, a(x)[0])  # and is active only while training
