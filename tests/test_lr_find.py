"""The learning-rate range test (rnnlab.train.lr_finder) and ``rnnlab lr-find``."""
import json
import math

import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import RnnlabError
from rnnlab.tasks import toy
from rnnlab.tasks.lr_find import parse_overrides
from rnnlab.train.lr_finder import lr_range_test

SMALL = toy.Config(samples=512, steps=8)


def test_range_test_restores_everything_and_suggests_a_rate_that_trains():
    trainer, (x, y), val = toy.build(SMALL)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    random_before = torch.get_rng_state()
    result = lr_range_test(trainer, x, y, 1e-5, 10.0, num_steps=60, batch_size=32)
    assert all(a < b for a, b in zip(result.lrs, result.lrs[1:]))  # the rate rises every batch
    assert result.lrs[0] == pytest.approx(1e-5)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the test changed no weight...
    assert torch.equal(torch.get_rng_state(), random_before)  # ...nor the random stream
    assert trainer.optimizer.param_groups[0]["lr"] == SMALL.learning_rate
    assert 1e-5 < result.suggestion < result.min_loss_lr <= 10.0
    # The suggested rate is a useful one: one epoch with it beats one epoch at the range's start.
    losses = {}
    for lr in (1e-5, result.suggestion):
        trainer, train, val = toy.build(toy.Config(samples=512, steps=8, learning_rate=lr))
        history = trainer.fit(*train, epochs=1, batch_size=32, validation_data=val, verbose=0)
        losses[lr] = history.history["val_loss"][-1]
    assert losses[result.suggestion] < 0.5 * losses[1e-5], losses


def test_a_loss_that_blows_up_ends_the_test_instead_of_failing_it():
    # Plain SGD without clipping: the loss reaches Inf/NaN well before 1e8.
    trainer, (x, y), _ = toy.build(toy.Config(samples=256, steps=8, optimizer="sgd", clipnorm=None))
    result = lr_range_test(trainer, x, y, 1e-3, 1e8, num_steps=80, batch_size=32, diverge=math.inf)
    assert len(result.lrs) < 80 and result.lrs[-1] < 1e8
    assert trainer.on_nan == "raise"  # the trainer's own policy is back
    assert result.suggestion is not None and result.suggestion < result.lrs[-1]


def test_bad_arguments_say_what_was_expected():
    trainer, (x, y), _ = toy.build(toy.Config(samples=64, steps=4))
    with pytest.raises(RnnlabError, match="start_lr < end_lr"):
        lr_range_test(trainer, x, y, 1.0, 1e-3)
    with pytest.raises(RnnlabError, match="num_steps must be >= 5"):
        lr_range_test(trainer, x, y, 1e-4, 1.0, num_steps=2)
    assert parse_overrides(toy.Config, ["clipnorm=none", "hidden=4"]) == {"clipnorm": None, "hidden": 4}
    with pytest.raises(RnnlabError, match="no setting 'units'"):
        parse_overrides(toy.Config, ["units=4"])


def test_lr_find_command_writes_the_curve_and_the_suggestion(tmp_path, capsys):
    code = main(["lr-find", "toy", "--steps", "40", "--end", "10", "--set", "samples=256", "steps=8",
                 "--run-dir", str(tmp_path), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert printed["suggested_lr"] == saved["suggested_lr"] and 1e-6 < printed["suggested_lr"] < 10
    assert (tmp_path / "lr_find.png").stat().st_size > 5000
    assert json.loads((tmp_path / "config.json").read_text())["config"]["task_config"]["samples"] == 256
    assert main(["lr-find", "no-such-task"]) == 2  # a clear error, not a traceback
    assert "unknown task 'no-such-task'" in capsys.readouterr().err
