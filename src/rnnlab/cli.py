"""``rnnlab <command>``: parsing and printing only; the work is in ``rnnlab.tasks``.

Each module ``rnnlab.tasks.<name>`` listed in :data:`COMMAND_MODULES` defines ``register(subparsers)``,
which adds its sub-command and sets ``func(args) -> exit code``. Under ``torchrun`` (or with
``--distributed`` where a command offers it) the process group is joined before the command runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rnnlab.errors import RnnlabError

# Order = order in --help.
COMMAND_MODULES = (
    "demo", "toy", "forecast", "generate", "translate", "speech", "motor",
    "gradients", "bench", "bench_fit", "bench_ddp", "tune", "lr_find", "explain", "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent networks (RNN, LSTM, GRU, rate networks) from their equations: "
                    "train, evaluate and analyse them on real data.",
        epilog="Run 'rnnlab COMMAND --help' for a command's options. Every training command writes a run "
               "folder (config.json, metrics.json, log.csv, plots) that 'rnnlab report' turns into a page.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (e.g. which kernel a layer uses)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rnnlab.tasks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rnnlab.tasks.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from rnnlab.train.distributed import init_from_env

    if init_from_env():
        from rnnlab.runs import is_main_process

        if not is_main_process():  # one voice: only rank 0 prints tables and JSON
            sys.stdout = open(os.devnull, "w")
    try:
        return int(args.func(args) or 0)
    except RnnlabError as exc:
        print(f"rnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


def add_run_arguments(parser: argparse.ArgumentParser, json_help: str = "print only the metrics as JSON") -> None:
    """The flags every training command shares: --run-dir, --resume, --seed, --json, --dry-run."""
    parser.add_argument("--run-dir", default=None, help="run folder (default runs/<command>/<timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run found in --run-dir")
    parser.add_argument("--seed", type=int, default=0, help="the one seed of the run (default 0)")
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--dry-run", action="store_true", help="a tiny version that runs in seconds (smoke test)")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, skip: tuple[str, ...] = ("seed",)) -> None:
    """One ``--field-name`` flag per field of a task's config dataclass, defaulting to the field's default."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if args else kind
        flag = f"--{f.name.replace('_', '-')}"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=f"default {default}")
        else:
            parser.add_argument(flag, type=kind, default=default, metavar=f.name.upper(), help=f"default {default}")


def config_from_args(config_cls, args: argparse.Namespace):
    """The task config built from the parsed flags (fields not on the command line keep defaults)."""
    import dataclasses

    values = vars(args)
    return config_cls(**{f.name: values[f.name] for f in dataclasses.fields(config_cls) if f.name in values})


def start_run(config_cls, args: argparse.Namespace, command, dry_run: dict):
    """The start every training command shares: the task config from the flags (with ``--dry-run``,
    the ``dry_run`` sizes over it), a new run folder (``command``: its name under ``runs/``, or a
    function of the config giving it) and ``config.json`` written there. Returns ``(config, run_dir)``."""
    import dataclasses

    from rnnlab.runs import new_run_dir, write_config

    config = config_from_args(config_cls, args)
    if args.dry_run:
        config = dataclasses.replace(config, **dry_run)
    run_dir = new_run_dir(command(config) if callable(command) else command, args.run_dir)
    write_config(run_dir, config)
    return config, run_dir


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
