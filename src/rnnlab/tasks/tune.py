"""``rnnlab tune <task>``: choose hyper-parameters (the learning rate first) with Optuna.

    rnnlab tune toy --param learning_rate=1e-4:1e-1:log --param hidden=16,32 --sampler grid \\
        --grid-points 4 --storage sqlite:///study.db --json

``--param NAME=LOW:HIGH[:log]`` is a range (int when both ends are ints), ``NAME=A,B,C`` a list.
Samplers: ``grid`` (every combination; ranges are cut into ``--grid-points`` values, log-spaced for
``:log``), ``random``, ``tpe``. Bad trials are pruned from their per-epoch validation loss (median
rule), diverging ones (NaN/Inf training loss) on the spot. With ``--storage`` the study lives in a
database, named after the task, the --param, --set and --seeds values: the same command again resumes it
(the grid continues where it stopped), and several processes started with the same command share
it, each taking the next trial.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import time
import typing
from pathlib import Path

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.runs import new_run_dir, save_figure, write_config, write_metrics
from rnnlab.tasks.lr_find import cast, load_task, parse_overrides
from rnnlab.train.callbacks import Callback


@dataclasses.dataclass
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list | None = None

    def grid(self, points: int) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.integer:
            values = np.unique(np.round(np.geomspace(self.low, self.high, points) if self.log
                                        else np.linspace(self.low, self.high, points)).astype(int))
            return [int(v) for v in values]
        values = np.geomspace(self.low, self.high, points) if self.log else np.linspace(self.low, self.high, points)
        return [float(f"{v:.6g}") for v in values]

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def parse_param(text: str, config_cls) -> Param:
    """``learning_rate=1e-4:1e-1:log`` or ``hidden=64,128`` -> :class:`Param` (checked against Config)."""
    if "=" not in text:
        raise RnnlabError(f"--param expects NAME=LOW:HIGH[:log] or NAME=A,B,..., got {text!r}")
    name, spec = text.split("=", 1)
    name = name.replace("-", "_")
    hints = typing.get_type_hints(config_cls)
    if name not in hints:
        raise RnnlabError(f"--param {name}: the task has no such setting; known: {sorted(hints)}")
    kind = hints[name]
    if ":" in spec:
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise RnnlabError(f"--param {name}: a range is LOW:HIGH or LOW:HIGH:log, got {spec!r}")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise RnnlabError(f"--param {name}: range ends must be numbers, got {spec!r}") from None
        if not low < high or (log and low <= 0):
            raise RnnlabError(f"--param {name}: need LOW < HIGH (and LOW > 0 for log), got {spec!r}")
        integer = all(p.lstrip("-").isdigit() for p in parts[:2])
        return Param(name, low, high, log, integer)
    return Param(name, choices=[cast(kind, v) for v in spec.split(",") if v != ""])


class OptunaPruning(Callback):
    """Report each epoch's validation loss to the trial; stop the trial when Optuna prunes it.

    A trial whose training loss turns NaN/Inf (a learning rate too high) is pruned on that batch,
    so one diverging point does not end the whole search."""

    def __init__(self, trial, monitor: str | None = "val_loss"):
        self.trial, self.monitor = trial, monitor  # monitor None: only divergence prunes

    def on_batch_end(self, batch, logs=None):
        import optuna

        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise optuna.TrialPruned(f"diverged: training loss {loss} at batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        value = None if self.monitor is None else (logs or {}).get(self.monitor)
        if value is None:
            return
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} is {value} at epoch {epoch + 1}")
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} ({self.monitor}={value:.4g})")


def make_sampler(name: str, params: list[Param], grid_points: int, seed: int):
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid(grid_points) for p in params}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise RnnlabError(f"--sampler must be grid, random or tpe, got {name!r}")


def make_pruner(prune: str, warmup_epochs: int):
    """Median rule: stop a trial whose validation loss after ``warmup_epochs`` epochs is worse than
    the median of the finished trials at the same epoch (once 3 trials have finished)."""
    import optuna

    if prune == "none":
        return optuna.pruners.NopPruner()
    if prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(int(warmup_epochs), 0))
    raise RnnlabError(f"--prune must be median or none, got {prune!r}")


def open_study(name: str, storage: str | None, sampler, pruner):
    """Create the study, or load it when the storage already has it (resume, or a parallel worker)."""
    import optuna

    for attempt in range(5):
        try:
            return optuna.create_study(study_name=name, storage=_storage(storage), load_if_exists=True,
                                       direction="minimize", sampler=sampler, pruner=pruner)
        except Exception as exc:  # noqa: BLE001  (sqlalchemy's errors; optuna does not wrap them)
            # Workers started together on a new database race to create its tables: the loser retries
            # and finds them made.
            if attempt == 4 or type(exc).__name__ not in ("OperationalError", "IntegrityError"):
                raise
            time.sleep(0.2 + random.random())


def _storage(url: str | None):
    import optuna

    if url and url.startswith("sqlite:"):
        # Parallel workers write to one SQLite file: wait for its lock rather than fail after 5 s.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


def tune(task_name: str, params: list[str], sampler: str = "tpe", trials: int | None = None, storage: str | None = None,
         study_name: str | None = None, grid_points: int = 4, fixed: list[str] | None = None, seed: int = 0,
         prune: str = "median", prune_after: int | None = None, seeds: int = 1):
    """Run (or resume) the study; returns the Optuna study and how many trials this call ran."""
    import optuna

    task = load_task(task_name)
    parsed = [parse_param(p, task.Config) for p in params]
    if not parsed:
        raise RnnlabError("give at least one --param to tune")
    base = dataclasses.replace(task.Config(), **parse_overrides(task.Config, fixed or []))
    if seeds < 1:
        raise RnnlabError(f"--seeds must be >= 1, got {seeds}")
    if seeds > 1 and not hasattr(base, "seed"):
        raise RnnlabError(f"--seeds {seeds} needs a task whose Config has a seed field; {task_name} has none")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if prune_after is None:
        # Slow starters (a memory task sits on a plateau before it drops) are judged after half their epochs.
        prune_after = max(1, int(getattr(base, "epochs", 2)) // 2)
    study = open_study(study_name or default_study_name(task_name, params, fixed, seeds), storage,
                       make_sampler(sampler, parsed, grid_points, seed), make_pruner(prune, prune_after))

    ran = 0

    def objective(trial):
        nonlocal ran
        ran += 1  # this process's trials (others may share the storage)
        config = dataclasses.replace(base, **{p.name: p.suggest(trial) for p in parsed})
        # The first run reports per epoch (pruning); the others, with the next seeds, are averaged in:
        # a rate that only works for one initialisation is not a tuned rate.
        losses = [task.objective(config, callbacks=[OptunaPruning(trial)])]
        for k in range(1, seeds):
            losses.append(task.objective(dataclasses.replace(config, seed=config.seed + k),
                                         callbacks=[OptunaPruning(trial, monitor=None)]))
        if seeds > 1:
            trial.set_user_attr("val_loss_per_seed", losses)
        return float(np.mean(losses))

    if sampler == "grid":
        remaining = len(grid_points_left(study, parsed, grid_points))
        trials = min(trials or remaining, remaining)
    elif trials is None:
        trials = 20
    if trials:
        study.optimize(objective, n_trials=trials)
    return study, ran


def default_study_name(task_name: str, params: list[str], fixed: list[str] | None, seeds: int = 1) -> str:
    """``rnnlab-<task>-<hash of the search>``: the same command resumes its study, a different search
    space, fixed settings or number of seeds start their own (so their trials never mix in one "best")."""
    key = json.dumps([sorted(params), sorted(fixed or []), seeds])
    return f"rnnlab-{task_name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def grid_points_left(study, params: list[Param], grid_points: int) -> list[tuple]:
    """The grid combinations no finished trial (complete, pruned or failed) of ``study`` has tried."""
    names = [p.name for p in params]
    grid = set(itertools.product(*(p.grid(grid_points) for p in params)))
    tried = {tuple(t.params.get(n) for n in names) for t in study.trials if t.state.is_finished()}
    return sorted(grid - tried, key=str)


def plot_study(study, path: Path) -> None:
    """Validation loss vs learning rate (one line per combination of the other settings); pruned
    trials as crosses at the last loss they reported. Without a tuned rate: loss vs trial number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.value is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    by_lr = all("learning_rate" in t.params for t in complete + pruned) and complete
    x_of = (lambda t: t.params["learning_rate"]) if by_lr else (lambda t: t.number)
    if by_lr:
        others = sorted({_other_settings(t) for t in complete}, key=str)
        for key in others:
            group = sorted((t for t in complete if _other_settings(t) == key), key=x_of)
            label = ", ".join(f"{k}={v}" for k, v in key) or "complete"
            ax.plot([x_of(t) for t in group], [t.value for t in group], "o-", label=label)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate (log)")
    else:
        ax.plot([x_of(t) for t in complete], [t.value for t in complete], "o", label="complete")
        ax.set(xlabel="trial")
    if pruned:
        ax.plot([x_of(t) for t in pruned], [t.value for t in pruned], "x", color="grey", label="pruned (last report)")
    values = [t.value for t in complete + pruned if math.isfinite(t.value)]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")  # diverged rates would otherwise flatten every useful point
    ax.set(ylabel="validation loss", title=f"{study.study_name}: {len(complete)} complete, {len(pruned)} pruned")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _other_settings(trial) -> tuple:
    return tuple(sorted((k, v) for k, v in trial.params.items() if k != "learning_rate"))


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="choose the learning rate and other settings (Optuna: grid, random, TPE)",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("task", help="task module following the task protocol, e.g. toy or forecast")
    p.add_argument("--param", action="append", default=[], metavar="SPEC", help="NAME=LOW:HIGH[:log] or NAME=A,B,...")
    p.add_argument("--sampler", default="tpe", choices=["grid", "random", "tpe"])
    p.add_argument("--trials", type=int, default=None, help="trials to run now (grid: default all remaining)")
    p.add_argument("--grid-points", type=int, default=4, help="values per range for the grid sampler (default 4)")
    p.add_argument("--storage", default=None, help="e.g. sqlite:///study.db: resumable, shareable between processes")
    p.add_argument("--study-name", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="fixed task settings")
    p.add_argument("--prune", default="median", choices=["median", "none"],
                   help="stop trials worse than the median at the same epoch (default), or never")
    p.add_argument("--prune-after", type=int, default=None, metavar="EPOCHS",
                   help="epochs before a trial can be pruned (default: half the task's epochs)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each trial with this many seeds (the task's seed, +1, ...) and minimise the mean")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    study, ran = tune(args.task, args.param, args.sampler, args.trials, args.storage, args.study_name,
                      args.grid_points, args.set, args.seed, args.prune, args.prune_after, args.seeds)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise RnnlabError(f"no trial of study {study.study_name!r} completed (all pruned or failed); "
                          f"narrow the --param ranges")
    run_dir = new_run_dir(f"tune/{args.task}", args.run_dir)
    write_config(run_dir, {k: v for k, v in vars(args).items() if k != "func"})
    plot_study(study, run_dir / "tune.png")
    result = {
        "task": args.task, "study": study.study_name, "best_params": study.best_trial.params,
        "best_val_loss": study.best_value, "trials": len(study.trials), "ran_now": ran, "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "all": [_trial_record(t) for t in study.trials],
    }
    write_metrics(run_dir, result)
    if args.json:
        print(json.dumps(result))
    else:
        for t in study.trials:
            value = t.value if t.value is not None else float("nan")
            print(f"trial {t.number:3d}  {t.state.name:8s}  val_loss={value:.4g}  {t.params}")
        print(f"study {study.study_name}: {ran} trials run now, {len(study.trials)} in all")
        print(f"best: {study.best_trial.params}  val_loss={study.best_value:.4g}")
        print(f"plot: {run_dir / 'tune.png'}")
    return 0


def _trial_record(trial) -> dict:
    record = {"number": trial.number, "params": trial.params, "val_loss": trial.value, "state": trial.state.name}
    if "val_loss_per_seed" in trial.user_attrs:
        record["val_loss_per_seed"] = trial.user_attrs["val_loss_per_seed"]
    return record
