"""``rnnlab tune <task>``: choose hyper-parameters (the learning rate first) with Optuna.

    rnnlab tune toy --param learning_rate=1e-4:1e-1:log --param hidden=16,32 --sampler grid \\
        --grid-points 4 --storage sqlite:///study.db --json

``--param NAME=LOW:HIGH[:log]`` is a range (int when both ends are ints), ``NAME=A,B,C`` a list.
Samplers: ``grid`` (every combination; ranges are cut into ``--grid-points`` values, log-spaced for
``:log``), ``random``, ``tpe``. Bad trials are pruned from their per-epoch validation loss (median
rule). With ``--storage`` the study lives in a database: a second invocation resumes it (the grid
continues where it stopped), and several processes can share it to run trials in parallel.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.runs import new_run_dir, save_figure, write_metrics
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
    """Report each epoch's validation loss to the trial; stop the trial when Optuna prunes it."""

    def __init__(self, trial, monitor: str = "val_loss"):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        value = (logs or {}).get(self.monitor)
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


def tune(task_name: str, params: list[str], sampler: str = "tpe", trials: int | None = None, storage: str | None = None,
         study_name: str | None = None, grid_points: int = 4, fixed: list[str] | None = None, seed: int = 0):
    """Run (or resume) the study; returns the Optuna study."""
    import optuna

    task = load_task(task_name)
    parsed = [parse_param(p, task.Config) for p in params]
    if not parsed:
        raise RnnlabError("give at least one --param to tune")
    base = dataclasses.replace(task.Config(), **parse_overrides(task.Config, fixed or []))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or f"rnnlab-{task_name}", storage=storage, load_if_exists=True, direction="minimize",
        sampler=make_sampler(sampler, parsed, grid_points, seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )

    def objective(trial):
        values = {p.name: p.suggest(trial) for p in parsed}
        return task.objective(dataclasses.replace(base, **values), callbacks=[OptunaPruning(trial)])

    if sampler == "grid":
        total = int(np.prod([len(p.grid(grid_points)) for p in parsed]))
        done = len([t for t in study.trials if t.state.is_finished()])
        trials = min(trials or total, max(total - done, 0))
    elif trials is None:
        trials = 20
    if trials:
        study.optimize(objective, n_trials=trials)
    return study


def plot_study(study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.trials if t.value is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if done and "learning_rate" in done[0].params:
        for key in sorted({tuple((k, v) for k, v in t.params.items() if k != "learning_rate") for t in done}, key=str):
            group = sorted((t for t in done if all(t.params.get(k) == v for k, v in key)), key=lambda t: t.params["learning_rate"])
            label = ", ".join(f"{k}={v}" for k, v in key) or "trials"
            ax.plot([t.params["learning_rate"] for t in group], [t.value for t in group], "o-", label=label)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate (log)")
        ax.legend(fontsize=8)
    else:
        ax.plot([t.number for t in done], [t.value for t in done], "o")
        ax.set(xlabel="trial")
    ax.set(ylabel="validation loss", title=f"{study.study_name}: {len(done)} finished trials")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    study = tune(args.task, args.param, args.sampler, args.trials, args.storage, args.study_name, args.grid_points,
                 args.set, args.seed)
    finished = [t for t in study.trials if t.value is not None]
    if not finished:
        raise RnnlabError("no trial finished (all pruned or failed)")
    run_dir = new_run_dir(f"tune/{args.task}", args.run_dir)
    plot_study(study, run_dir / "tune.png")
    result = {
        "task": args.task, "best_params": study.best_trial.params, "best_val_loss": study.best_value,
        "trials": len(study.trials), "finished": len(finished),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "all": [{"params": t.params, "val_loss": t.value, "state": t.state.name} for t in study.trials],
    }
    write_metrics(run_dir, result)
    if args.json:
        print(json.dumps(result))
    else:
        for t in study.trials:
            print(f"trial {t.number:3d}  {t.state.name:8s}  val_loss={t.value if t.value is not None else float('nan'):.4g}  {t.params}")
        print(f"best: {study.best_trial.params}  val_loss={study.best_value:.4g}")
        print(f"plot: {run_dir / 'tune.png'}")
    return 0
