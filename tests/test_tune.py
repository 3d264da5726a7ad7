"""rnnlab tune (grid / random / TPE on Optuna, resumable) and rnnlab lr-find."""
import json
import subprocess
import sys

import pytest

from rnnlab.errors import RnnlabError
from rnnlab.tasks import toy
from rnnlab.tasks.tune import parse_param
from rnnlab.train.lr_finder import lr_range_test

FIXED = ["--set", "epochs=2", "samples=256", "steps=8"]


def _tune(storage, *extra):
    cmd = [sys.executable, "-m", "rnnlab", "tune", "toy", "--param", "learning_rate=1e-3:1e-1:log", "--param",
           "hidden=4,8", "--sampler", "grid", "--grid-points", "3", "--storage", storage, "--json", *FIXED, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_grid_tries_every_point_best_is_lowest_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _tune(storage, "--trials", "2", "--run-dir", str(tmp_path / "a"))
    assert first["trials"] == 2
    second = _tune(storage, "--run-dir", str(tmp_path / "b"))  # resumes: only the 4 missing points run
    assert second["trials"] == 6
    tried = {(round(t["params"]["learning_rate"], 6), t["params"]["hidden"]) for t in second["all"]}
    assert tried == {(lr, h) for lr in (0.001, 0.01, 0.1) for h in (4, 8)}
    finished = [t for t in second["all"] if t["state"] == "COMPLETE"]
    assert second["best_val_loss"] == min(t["val_loss"] for t in finished)
    assert (tmp_path / "b" / "tune.png").stat().st_size > 5000
    third = _tune(storage, "--run-dir", str(tmp_path / "c"))  # grid exhausted: nothing re-run
    assert third["trials"] == 6


def test_param_parsing():
    p = parse_param("learning_rate=1e-4:1e-1:log", toy.Config)
    assert (p.low, p.high, p.log, p.integer) == (1e-4, 1e-1, True, False)
    assert parse_param("hidden=16:64", toy.Config).integer
    assert parse_param("hidden=16,32", toy.Config).choices == [16, 32]
    assert parse_param("learning_rate=1e-3:1e-1:log", toy.Config).grid(3) == [0.001, 0.01, 0.1]
    with pytest.raises(RnnlabError, match="no such setting"):
        parse_param("units=3,4", toy.Config)
    with pytest.raises(RnnlabError, match="LOW < HIGH"):
        parse_param("learning_rate=1:0.1", toy.Config)


def test_lr_range_test_restores_the_model_and_suggests_a_rate():
    config = toy.Config(samples=512, steps=8)
    trainer, (x, y), _ = toy.build(config)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = lr_range_test(trainer, x, y, 1e-5, 10.0, num_steps=60, batch_size=32)
    assert 1e-5 < result.suggestion < 10.0
    assert all(a < b for a, b in zip(result.lrs, result.lrs[1:]))  # the rate rises every batch
    for k, v in trainer.model.state_dict().items():
        assert (v == before[k]).all(), k  # nothing changed
