"""rnnlab.explain: attributions concentrate where the label lives, and integrated gradients are complete."""
import numpy as np
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


# --- several outputs: a forecaster/regressor explains the output chosen by ``target`` ---------

OUTPUT_STEPS = (1, 5, 8)  # output k copies feature 0 at step OUTPUT_STEPS[k]


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnlab.GRU(2, 32)
        self.head = nn.Linear(32, len(OUTPUT_STEPS))

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_each_output_of_a_regressor_points_to_its_own_step():
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, STEPS, 2, generator=g)
    y = x[:, list(OUTPUT_STEPS), 0]
    model = Regressor()
    Trainer(model, "mse", learning_rate=1e-2).fit(x, y, epochs=10, batch_size=64, verbose=0)
    xt = torch.randn(16, STEPS, 2, generator=g)
    for k, step in enumerate(OUTPUT_STEPS):
        result = explain(model, xt, target=k)
        share = result.step_share()[:, step].mean().item()
        assert share > 0.8, f"output {k}: only {share:.0%} on step {step}"
        assert (result.relative_delta() < 0.01).all()


# --- seq2seq: a decoder step explained over the embedded source through forward= --------------

VOCAB, LENGTH = 6, 4


class Copier(nn.Module):
    """Encoder-decoder without attention that copies its source; token VOCAB starts the target."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, 16)
        self.encoder = rnnlab.GRU(16, 48)
        self.decoder = rnnlab.GRU(16, 48)
        self.head = nn.Linear(48, VOCAB)

    def decode(self, source_embedded, prefix):
        _, state = self.encoder(source_embedded)
        return self.head(self.decoder(self.embed(prefix), state)[0])

    def forward(self, source, prefix):
        return self.decode(self.embed(source), prefix)


def _copy_data(n, seed):
    source = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
    return source, torch.cat([torch.full((n, 1), VOCAB), source[:, :-1]], 1)  # teacher-forced prefix


def test_seq2seq_decoder_step_by_step():
    seed_everything(0)
    model = Copier()
    source, prefix = _copy_data(4096, 0)

    def loss(logits, target):
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))

    Trainer(model, loss, learning_rate=1e-2).fit((source, prefix), source, epochs=15, batch_size=128, verbose=0)
    source, prefix = _copy_data(16, 1)
    assert (model(source, prefix).argmax(-1) == source).float().mean() > 0.95
    embedded = model.embed(source).detach()
    for step in range(LENGTH):
        def decoder_step(emb, pre, step=step):  # the logits of one output position
            return model.decode(emb, pre)[:, step]

        for method in METHODS:
            result = explain(model, embedded, target=source[:, step], method=method, forward=decoder_step,
                             forward_args=(prefix,))
            assert result.attributions.shape == embedded.shape
            if method == "integrated_gradients":
                assert (result.relative_delta() < 0.01).all()
            if method == "occlusion":
                # Blanking the source token being copied hurts that output most.
                assert result.step_share().mean(0).argmax().item() == step


# --- input checking, baselines, determinism --------------------------------------------------


def test_bad_inputs_name_what_was_expected():
    model = SignClassifier(rnnlab.RNN)
    x, _ = _task(4, 4)
    with pytest.raises(RnnlabError, match="NaN"):
        explain(model, x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill(1, torch.tensor([2]), True), float("nan")))
    with pytest.raises(RnnlabError, match="baseline tensor must broadcast"):
        explain(model, x, baseline=torch.zeros(3, 1, 2))
    with pytest.raises(RnnlabError, match="baseline must be"):
        explain(model, x, baseline="noise")
    with pytest.raises(RnnlabError, match="one index per sample"):
        explain(model, x, target=torch.tensor([0, 1]))
    with pytest.raises(RnnlabError, match="occlusion window"):
        explain(model, x, method="occlusion", window=(3, None))
    with pytest.raises(RnnlabError, match="float tensor"):
        explain(model, x.long())


def test_occlusion_window_per_feature_and_gradient_shap_seed():
    model = SignClassifier(rnnlab.LSTM)
    x, _ = _task(3, 6)
    per_cell = explain(model, x, method="occlusion", window=(1, 1))
    assert per_cell.attributions.shape == x.shape
    # Each (step, feature) cell gets its own effect: the two features of a step differ.
    assert not torch.allclose(per_cell.attributions[..., 0], per_cell.attributions[..., 1])
    state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a = explain(model, x, method="gradient_shap", baseline="mean", n_samples=16, seed=1).attributions
    b = explain(model, x, method="gradient_shap", baseline="mean", n_samples=16, seed=1).attributions
    torch.testing.assert_close(a, b)
    # The caller's random streams are untouched.
    assert torch.equal(state, torch.random.get_rng_state())
    assert (numpy_state == np.random.get_state()[1]).all()


# --- the command line over the task hook ------------------------------------------------------


def test_cli_explain_toy_writes_heatmap_and_metrics(tmp_path, capsys):
    import json

    from rnnlab.cli import main
    from rnnlab.tasks import toy

    toy.run(toy.Config(samples=256, epochs=2, steps=8, hidden=8), run_dir=tmp_path / "train")
    checkpoint = tmp_path / "train" / "checkpoints" / "last.safetensors"
    out = tmp_path / "heat.png"
    code = main(["explain", "toy", "--checkpoint", str(checkpoint), "--input", "seed:3", "--out", str(out),
                 "--run-dir", str(tmp_path / "explain"), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 5000
    assert json.loads((tmp_path / "explain" / "metrics.json").read_text())["top_steps"] == printed["top_steps"]
    assert printed["completeness_relative_gap"] < 0.01
    assert sum(printed["top_step_shares"]) <= 1.0 + 1e-6
    assert main(["explain", "toy", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert main(["explain", "no_such_task", "--checkpoint", str(checkpoint)]) == 2
    assert main(["explain", "toy", "--checkpoint", str(checkpoint), "--input", "first"]) == 2
    assert "seed:N" in capsys.readouterr().err


def test_hook_protocol_is_checked():
    from rnnlab.tasks.explain import check_spec

    x = torch.zeros(1, 3, 1)
    with pytest.raises(RnnlabError, match="unknown keys"):
        check_spec("t", {"x": x, "model": nn.Identity(), "step_label": []})
    with pytest.raises(RnnlabError, match="'model' or 'forward'"):
        check_spec("t", {"x": x})
    with pytest.raises(RnnlabError, match="must return a dict"):
        check_spec("t", (None, x))


def test_occlusion_step_total_is_the_output_change_when_that_step_is_blanked():
    model = SignClassifier(rnnlab.GRU).eval()
    x, _ = _task(4, 7)
    result = explain(model, x, target=1, method="occlusion")
    blanked = x.clone()
    blanked[:, 4] = 0.0  # the zeros baseline at step 4
    with torch.no_grad():
        change = model(x)[:, 1] - model(blanked)[:, 1]
    torch.testing.assert_close(result.per_step()[:, 4], change)
    torch.testing.assert_close(result.per_feature().sum(1), result.per_step().sum(1))
