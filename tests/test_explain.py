"""rnnlab.explain: attributions concentrate where the label lives, and integrated gradients are complete."""
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.explain import METHODS, explain
from rnnlab.train import Trainer, seed_everything

STEPS, KEY = 10, 3


class SignClassifier(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(2, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return torch.softmax(self.head(self.rnn(x)[0][:, -1]), -1)


def _task(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, STEPS, 2, generator=g)
    return x, (x[:, KEY, 0] > 0).long()  # only step 3 (feature 0) carries the label


@pytest.fixture(scope="module", params=[rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN], ids=["lstm", "gru", "rnn"])
def trained(request):
    seed_everything(0)
    model = SignClassifier(request.param)
    x, y = _task(2048, 0)
    trainer = Trainer(model, "sparse_categorical_crossentropy", learning_rate=1e-2, metrics=["accuracy"])
    trainer.fit(x, y, epochs=12, batch_size=64, verbose=0)
    xt, yt = _task(256, 1)
    assert trainer.evaluate(xt, yt)["accuracy"] > 0.9
    return model


@pytest.mark.parametrize("method", METHODS)
def test_mass_concentrates_on_the_step_that_carries_the_label(trained, method):
    x, _ = _task(32, 2)
    x = x[x[:, KEY, 0].abs() > 0.5][:16]  # clear-cut cases
    result = explain(trained, x, target=None, method=method)
    assert result.attributions.shape == x.shape
    share = result.step_share()[:, KEY].mean().item()
    assert share > 0.8, f"{method}: only {share:.0%} of the attribution on step {KEY}"


def test_integrated_gradients_completeness_within_one_percent(trained):
    x, _ = _task(16, 3)
    result = explain(trained, x, target=1, method="integrated_gradients", n_steps=128)
    total = result.attributions.sum(dim=(1, 2))
    gap = (total - (result.output - result.baseline_output)).abs()
    scale = (result.output - result.baseline_output).abs()
    keep = scale > 0.05  # completeness is relative; near-zero differences say nothing
    assert (gap[keep] / scale[keep]).max() < 0.01
    assert (result.relative_delta()[keep] < 0.01).all()


def test_baselines_and_errors():
    model = SignClassifier(rnnlab.GRU)
    x, _ = _task(4, 4)
    for baseline in ("zeros", "mean", "silence"):
        assert explain(model, x, baseline=baseline).attributions.shape == x.shape
    r = explain(model, x, baseline="mean")
    torch.testing.assert_close(r.baseline[:, 0], x.mean(1))
    with pytest.raises(RnnlabError, match="method must be one of"):
        explain(model, x, method="lime")
    with pytest.raises(RnnlabError, match=r"\(batch, time, features\)"):
        explain(model, x[0])
    with pytest.raises(RnnlabError, match="target must index"):
        explain(model, x, target=5)


def test_heatmap_png(trained, tmp_path):
    x, _ = _task(2, 5)
    path = explain(trained, x).plot(tmp_path / "heat.png", inputs=x[..., 0])
    assert path.stat().st_size > 5000
