"""The one trainer: losses, metrics, clipping, schedules, NaN handling, data forms, resume."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.train import CheckpointError, Trainer, load_checkpoint, seed_everything
from rnnlab.train import losses
from rnnlab.train.metrics import get_metric


class Regressor(nn.Module):
    def __init__(self, cell=rnnlab.LSTM, hidden=16):
        super().__init__()
        self.rnn = cell(1, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _sum_task(n=256, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 1, generator=g)
    return x, x.sum(1) / math.sqrt(t)


def test_losses_match_hand_computed_values():
    p = torch.tensor([[0.8], [0.3]])
    y = torch.tensor([[1.0], [0.0]])
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert losses.binary_crossentropy(p, y).item() == pytest.approx(expected, rel=1e-6)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert losses.sparse_categorical_crossentropy(probs, torch.tensor([0, 2])).item() == pytest.approx(
        -(math.log(0.7) + math.log(0.8)) / 2, rel=1e-6)
    assert losses.categorical_crossentropy(probs, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])).item() == pytest.approx(
        -(math.log(0.7) + math.log(0.8)) / 2, rel=1e-6)
    assert losses.mean_squared_error(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])).item() == 2.5
    assert losses.mean_absolute_error(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0])).item() == 2.0
    with pytest.raises(RnnlabError, match=r"labels must be in \[0, 2\]"):
        losses.sparse_categorical_crossentropy(probs, torch.tensor([0, 3]))


def test_accuracy_takes_the_keras_meaning_of_the_loss():
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    _, acc = get_metric("accuracy", "sparse_categorical_crossentropy")
    assert acc(probs, torch.tensor([0, 0])).item() == 0.5
    _, acc = get_metric("accuracy", "categorical_crossentropy")
    assert acc(probs, torch.tensor([[1.0, 0], [0, 1.0]])).item() == 1.0
    _, acc = get_metric("accuracy", "binary_crossentropy")
    assert acc(torch.tensor([[0.7], [0.4]]), torch.tensor([[1.0], [1.0]])).item() == 0.5


@pytest.mark.parametrize("cell", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
def test_fit_learns_and_evaluate_reports(cell):
    seed_everything(0)
    x, y = _sum_task()
    trainer = Trainer(Regressor(cell), "mse", learning_rate=1e-2, metrics=["mae"])
    before = trainer.evaluate(x, y)["loss"]
    history = trainer.fit(x, y, epochs=15, batch_size=32, verbose=0, validation_split=0.25)
    after = trainer.evaluate(x, y)
    assert after["loss"] < 0.1 * before and after["loss"] < 0.1
    assert set(history.history) >= {"loss", "mae", "val_loss", "val_mae", "lr"}
    assert len(history.history["loss"]) == 15
    assert trainer.predict(x).shape == (256, 1)


def test_same_seed_same_numbers():
    results = []
    for _ in range(2):
        seed_everything(3)
        x, y = _sum_task()
        t = Trainer(Regressor(), "mse", seed=3)
        t.fit(x, y, epochs=2, verbose=0)
        results.append(t.evaluate(x, y)["loss"])
    assert results[0] == results[1]


def test_clipnorm_bounds_the_update():
    seed_everything(0)
    model = Regressor(rnnlab.RNN)
    x, y = _sum_task(64)
    y = y * 1e4  # a huge loss: the raw gradient norm is far above 1e-3
    t = Trainer(model, "mse", optimizer="sgd", learning_rate=1.0, clipnorm=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    t.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert step.item() == pytest.approx(1e-3, rel=1e-3)


def test_clipvalue_bounds_each_gradient():
    seed_everything(0)
    model = Regressor(rnnlab.RNN)
    x, y = _sum_task(64)
    t = Trainer(model, "mse", optimizer="sgd", learning_rate=1.0, clipvalue=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    t.fit(x, y * 1e4, epochs=1, batch_size=64, verbose=0)
    assert max((p - b).abs().max().item() for p, b in zip(model.parameters(), before)) == pytest.approx(1e-4, rel=1e-4)


@pytest.mark.parametrize("schedule,expected", [("step", 0.1), ("exponential", 0.9 ** 3), ("cosine", 0.0)])
def test_schedules_change_the_learning_rate(schedule, expected):
    x, y = _sum_task(32)
    kwargs = {"step_size": 3} if schedule == "step" else {}
    t = Trainer(Regressor(), "mse", learning_rate=1.0, optimizer="sgd", schedule=schedule, schedule_kwargs=kwargs)
    t.fit(x, y * 0, epochs=3, verbose=0)
    assert t.learning_rate == pytest.approx(expected, abs=1e-9)


def test_nan_loss_raises_naming_the_batch_or_is_skipped():
    x, y = _sum_task(64)

    def nan_on_second(pred, target, calls=[0]):
        calls[0] += 1
        loss = ((pred - target) ** 2).mean()
        return loss * float("nan") if calls[0] == 2 else loss

    with pytest.raises(RnnlabError, match="loss is nan at epoch 1, batch 1"):
        Trainer(Regressor(), nan_on_second).fit(x, y, epochs=1, batch_size=16, verbose=0)
    with pytest.warns(UserWarning, match="batch skipped"):
        Trainer(Regressor(), lambda p, t: ((p - t) ** 2).mean() * (float("nan") if p.shape[0] == 8 else 1.0),
                on_nan="skip").fit(x[:40], y[:40], epochs=1, batch_size=16, verbose=0)


def test_bad_data_gets_clear_errors():
    t = Trainer(Regressor(), "mse")
    x, y = _sum_task(16)
    bad = x.clone()
    bad[3, 2, 0] = float("nan")
    with pytest.raises(RnnlabError, match=r"x contains NaN or Inf \(first at index \(3, 2, 0\)\)"):
        t.fit(bad, y, verbose=0)
    with pytest.raises(RnnlabError, match="same number of samples"):
        t.fit(x, y[:10], verbose=0)
    with pytest.raises(RnnlabError, match="empty"):
        t.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(RnnlabError, match="must be numeric"):
        t.fit(np.array([["a"]] * 16), y, verbose=0)
    with pytest.raises(RnnlabError, match="one-shot iterator"):
        t.fit(iter([(x, y)]), verbose=0)


def test_dataloader_and_generated_batches():
    x, y = _sum_task(64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    t = Trainer(Regressor(), "mse", learning_rate=1e-2)
    h = t.fit(loader, epochs=2, validation_data=loader, verbose=0)
    assert len(h.history["val_loss"]) == 2

    class Generated:  # a fresh batch stream every epoch
        def __iter__(self):
            for _ in range(3):
                xb = torch.randn(8, 5, 1)
                yield xb, xb.sum(1)

    assert len(Trainer(Regressor(), "mse").fit(Generated(), epochs=2, verbose=0).history["loss"]) == 2


def test_stateful_models_are_reset_every_epoch():
    class Stateful(Regressor):
        resets = 0

        def reset_states(self):
            Stateful.resets += 1

    x, y = _sum_task(32)
    Trainer(Stateful(), "mse").fit(x, y, epochs=3, verbose=0)
    assert Stateful.resets >= 3


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    x, y = _sum_task(128)

    def run(epochs, run_dir, resume=False, seed_first=0):
        seed_everything(seed_first)
        model = Regressor()
        model.rnn.dropout = 0.0
        t = Trainer(model, "mse", learning_rate=1e-2, run_dir=run_dir, keep_last=2)
        t.fit(x, y, epochs=epochs, batch_size=16, verbose=0, resume=resume)
        return model

    full = run(4, tmp_path / "full")
    run(2, tmp_path / "cut")
    resumed = run(4, tmp_path / "cut", resume=True, seed_first=99)  # other init: the checkpoint must win
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    names = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert names == ["best.safetensors", "epoch-0003.safetensors", "epoch-0004.safetensors", "last.safetensors"]
    assert (tmp_path / "cut" / "log.csv").read_text().count("\n") == 5


def test_truncated_or_foreign_checkpoint_gets_a_clear_error(tmp_path):
    x, y = _sum_task(32)
    Trainer(Regressor(), "mse", run_dir=tmp_path).fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "checkpoints" / "last.safetensors"
    assert load_checkpoint(path)["epoch"] == 0
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}.*(truncated|corrupt)"):
        load_checkpoint(path)
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an rnnlab checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_wrong_arguments():
    with pytest.raises(RnnlabError, match="loss must be a callable or one of"):
        Trainer(Regressor(), "hinge-ish")
    with pytest.raises(RnnlabError, match="optimizer must be"):
        Trainer(Regressor(), "mse", optimizer="adagrad-x")
    with pytest.raises(RnnlabError, match="learning_rate must be a number >= 0"):
        Trainer(Regressor(), "mse", learning_rate=-1)
    with pytest.raises(RnnlabError, match="batch_size must be a positive int"):
        Trainer(Regressor(), "mse").fit(*_sum_task(8), batch_size=0)


def test_tensorboard_event_files_beside_the_log(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = _sum_task(32)
    Trainer(Regressor(), "mse", run_dir=tmp_path).fit(x, y, epochs=2, verbose=0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2]


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_best_checkpoint_follows_the_monitored_figure(monitor, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(192, 6, 2, generator=g)
    y = (x[:, :, 0].sum(1) + 0.8 * torch.randn(192, generator=g) > 0).long()  # noisy labels: the loss and the
    seed_everything(0)                                                          # accuracy peak apart

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnnlab.GRU(2, 32), nn.Linear(32, 2)

        def forward(self, inp):
            return self.head(self.rnn(inp)[0][:, -1])

    t = Trainer(Classifier(), "cross_entropy", learning_rate=3e-2, metrics=["accuracy"], run_dir=tmp_path,
                best_monitor=monitor)
    history = t.fit(x[:128], y[:128], epochs=8, batch_size=16, validation_data=(x[128:], y[128:]), verbose=0).history
    values = history[monitor]
    want = int(np.argmax(values)) if monitor == "val_accuracy" else int(np.argmin(values))  # the first best
    assert load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")["epoch"] == want
