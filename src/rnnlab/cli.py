"""``rnnlab <command>``: parsing and printing only; the work is in ``rnnlab.tasks``.

Each module ``rnnlab.tasks.<name>`` listed in :data:`COMMAND_MODULES` defines ``register(subparsers)``,
which adds its sub-command and sets ``func(args) -> exit code``. Under ``torchrun`` (or with
``--distributed`` where a command offers it) the process group is joined before the command runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rnnlab.errors import RnnlabError

# Order = order in --help.
COMMAND_MODULES = (
    "demo", "forecast", "generate", "translate", "speech", "motor",
    "gradients", "bench", "tune", "lr_find", "explain", "report",
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

    init_from_env()
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
