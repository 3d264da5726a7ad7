"""rnnlab tune: grid / random / TPE on Optuna, pruning, resumable from its storage, shared by processes."""
import json
import math
import os
import subprocess
import sys

import optuna
import pytest

from rnnlab.cli import main
from rnnlab.errors import RnnlabError
from rnnlab.tasks import toy
from rnnlab.tasks.tune import OptunaPruning, default_study_name, parse_param

FIXED = ["--set", "epochs=2", "samples=256", "steps=8"]
GRID = ["--param", "learning_rate=1e-3:1e-1:log", "--param", "hidden=4,8", "--sampler", "grid", "--grid-points", "3"]


def _command(storage, *extra):
    return [sys.executable, "-m", "rnnlab", "tune", "toy", *GRID, "--storage", storage, "--json", *FIXED, *extra]


def _finish(process):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _tune_here(capsys, storage, run_dir, *extra):
    """``rnnlab tune`` in this process (no interpreter start-up): its JSON output."""
    assert main(["tune", "toy", *GRID, "--storage", storage, "--json", *FIXED, "--run-dir", str(run_dir), *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_grid_tries_every_point_best_is_lowest_and_resumes(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _tune_here(capsys, storage, tmp_path / "a", "--trials", "2")
    assert (first["trials"], first["ran_now"]) == (2, 2)
    second = _tune_here(capsys, storage, tmp_path / "b")
    assert (second["trials"], second["ran_now"]) == (6, 4)  # resumed: only the 4 missing points ran
    assert second["all"][:2] == first["all"]  # the first two trials were kept, not re-run
    tried = {(round(t["params"]["learning_rate"], 6), t["params"]["hidden"]) for t in second["all"]}
    assert tried == {(lr, h) for lr in (0.001, 0.01, 0.1) for h in (4, 8)}
    complete = [t for t in second["all"] if t["state"] == "COMPLETE"]
    assert second["best_val_loss"] == min(t["val_loss"] for t in complete)
    assert second["best_params"] == min(complete, key=lambda t: t["val_loss"])["params"]
    assert (tmp_path / "b" / "tune.png").stat().st_size > 5000
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["best_params"] == second["best_params"]
    third = _tune_here(capsys, storage, tmp_path / "c")  # grid exhausted: nothing re-run
    assert (third["trials"], third["ran_now"]) == (6, 0)


def test_two_processes_share_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(_command(storage, "--run-dir", str(tmp_path / f"w{i}")), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    results = [_finish(w) for w in workers]
    study = optuna.load_study(study_name=results[0]["study"], storage=storage)
    tried = {(round(t.params["learning_rate"], 6), t.params["hidden"]) for t in study.trials if t.state.is_finished()}
    assert tried == {(lr, h) for lr in (0.001, 0.01, 0.1) for h in (4, 8)}
    # No trial lost or double-counted. When the grid runs out while points are still in progress,
    # Optuna's grid sampler hands a worker one of those again before the study stops: at most one
    # extra trial per worker (both happen when the two reach the end together).
    assert sum(r["ran_now"] for r in results) == len(study.trials) <= 6 + len(workers)


def test_pruning_stops_a_trial_worse_than_the_median_and_a_diverging_one():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    OptunaPruning(good).on_epoch_end(0, {"val_loss": 1e-6})
    study.tell(good, 1e-6)
    bad = study.ask()
    with pytest.raises(optuna.TrialPruned):
        OptunaPruning(bad).on_epoch_end(0, {"val_loss": 5.0})
    fine = study.ask()
    OptunaPruning(fine).on_epoch_end(0, {"val_loss": 1e-7})  # better than the median: goes on
    with pytest.raises(optuna.TrialPruned, match="diverged"):
        OptunaPruning(fine).on_batch_end(3, {"loss": math.nan})
    # through the trainer: the callback's TrialPruned ends fit on the spot
    trainer, train, val = toy.build(toy.Config(samples=64, steps=4, epochs=3), callbacks=[OptunaPruning(study.ask())])
    with pytest.raises(optuna.TrialPruned):
        trainer.fit(*train, epochs=3, batch_size=32, validation_data=val, verbose=0)
    assert len(trainer.history.history.get("val_loss", [])) == 1  # pruned after its first epoch


def test_param_parsing_and_study_names():
    p = parse_param("learning_rate=1e-4:1e-1:log", toy.Config)
    assert (p.low, p.high, p.log, p.integer) == (1e-4, 1e-1, True, False)
    assert parse_param("hidden=16:64", toy.Config).integer
    assert parse_param("hidden=16,32", toy.Config).choices == [16, 32]
    assert parse_param("learning_rate=1e-3:1e-1:log", toy.Config).grid(3) == [0.001, 0.01, 0.1]
    with pytest.raises(RnnlabError, match="no such setting"):
        parse_param("units=3,4", toy.Config)
    with pytest.raises(RnnlabError, match="LOW < HIGH"):
        parse_param("learning_rate=1:0.1", toy.Config)
    with pytest.raises(RnnlabError, match="NAME=LOW:HIGH"):
        parse_param("learning_rate", toy.Config)
    # the same search resumes the same study; another search space gets its own
    name = default_study_name("toy", ["learning_rate=1e-3:1e-1:log", "hidden=4,8"], ["epochs=2"])
    assert name == default_study_name("toy", ["hidden=4,8", "learning_rate=1e-3:1e-1:log"], ["epochs=2"])
    assert name != default_study_name("toy", ["learning_rate=1e-3:1e-1:log"], ["epochs=2"])
    assert name != default_study_name("toy", ["learning_rate=1e-3:1e-1:log", "hidden=4,8"], ["epochs=3"])


def test_seeds_average_each_trial_and_name_their_own_study(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'seeds.db'}"
    args = ["tune", "toy", "--param", "learning_rate=0.003,0.03", "--sampler", "grid", "--seeds", "2",
            "--prune", "none", "--storage", storage, "--json", *FIXED, "--run-dir", str(tmp_path / "s")]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ran_now"] == 2 and result["pruned"] == 0
    for trial in result["all"]:
        per_seed = trial["val_loss_per_seed"]
        assert len(per_seed) == 2 and per_seed[0] != per_seed[1]  # really two different seeds
        assert trial["val_loss"] == pytest.approx(sum(per_seed) / 2)
    # seed 0's loss is what a one-seed study of the same point gets
    assert main([a for a in args if a not in ("--seeds", "2")] + ["--trials", "1"]) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert single["study"] != result["study"]
    point = single["all"][0]
    same = next(t for t in result["all"] if t["params"] == point["params"])
    assert same["val_loss_per_seed"][0] == pytest.approx(point["val_loss"])
    with pytest.raises(RnnlabError, match="--seeds must be >= 1"):
        from rnnlab.tasks.tune import tune
        tune("toy", ["learning_rate=0.01,0.1"], "grid", seeds=0)
