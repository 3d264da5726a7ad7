"""``rnnlab lr-find <task>``: the learning-rate range test on a task's model and data.

Any task module that follows the task protocol (``Config``, ``build(config)``; see docs/design.md)
works: ``toy`` and ``forecast`` among them.
"""
from __future__ import annotations

import dataclasses
import importlib
import json

from rnnlab.errors import RnnlabError
from rnnlab.runs import new_run_dir, write_config, write_metrics
from rnnlab.train.lr_finder import lr_range_test


def load_task(name: str):
    """The task module ``rnnlab.tasks.<name>``, checked for the tuning protocol."""
    try:
        module = importlib.import_module(f"rnnlab.tasks.{name.replace('-', '_')}")
    except ModuleNotFoundError:
        raise RnnlabError(f"unknown task {name!r}") from None
    missing = [attr for attr in ("Config", "build", "objective") if not hasattr(module, attr)]
    if missing:
        raise RnnlabError(f"task {name!r} does not support tuning (it lacks {', '.join(missing)})")
    return module


def parse_overrides(config_cls, items: list[str]) -> dict:
    """``["hidden=64", "epochs=3"]`` -> typed field values of the task's Config."""
    import typing

    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise RnnlabError(f"--set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        name = name.replace("-", "_")
        if name not in fields:
            raise RnnlabError(f"{config_cls.__module__} has no setting {name!r}; known: {sorted(fields)}")
        out[name] = cast(hints[name], value)
    return out


def cast(kind, value: str):
    import typing

    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) < len(typing.get_args(kind)) and value.lower() in ("none", "null"):
        return None  # an optional setting switched off, e.g. clipnorm=none
    kind = args[0] if args else kind
    if kind is bool:
        return value.lower() in ("1", "true", "yes")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise RnnlabError(f"cannot read {value!r} as {getattr(kind, '__name__', kind)}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("lr-find", help="learning-rate range test: loss vs rate, a suggested rate (PNG)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="task module, e.g. toy or forecast")
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=100, help="batches, one rate each (default 100)")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="override task settings")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    task = load_task(args.task)
    config = dataclasses.replace(task.Config(), **parse_overrides(task.Config, args.set))
    trainer, train, _ = task.build(config)
    x, y = train if isinstance(train, tuple) else (train, None)
    result = lr_range_test(trainer, x, y, args.start, args.end, args.steps,
                           batch_size=getattr(config, "batch_size", 32))
    run_dir = new_run_dir(f"lr-find/{args.task}", args.run_dir)
    write_config(run_dir, {"task": args.task, "task_config": config, "start": args.start, "end": args.end,
                           "steps": args.steps})
    result.plot(run_dir / "lr_find.png")
    metrics = {"task": args.task, "suggested_lr": result.suggestion, "min_loss_lr": result.min_loss_lr,
               "steps": len(result.lrs)}
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
    elif result.suggestion is None:
        print("no suggestion: the loss was not finite for enough steps; lower --end or --start")
    else:
        print(f"suggested learning rate: {result.suggestion:.3g} (loss lowest at {result.min_loss_lr:.3g})")
        print(f"plot: {run_dir / 'lr_find.png'}")
    return 0
