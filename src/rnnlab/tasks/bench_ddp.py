"""``rnnlab bench-ddp``: the speed-up of N torchrun processes over one, on the same training run.

Runs ``rnnlab toy`` (or the task command given after ``--``) twice in one benchmark: once as a
single process, once under ``torchrun --nproc_per_node N`` on loopback with the same global batch,
and reports the ratio of their training times (``train_s`` from each run's JSON).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from rnnlab.errors import RnnlabError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_seconds(cmd: list[str]) -> float:
    # The single process keeps torch's default threads (all cores); torchrun gives each rank one.
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RnnlabError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return float(result["train_s"])


def run(nproc: int, task_args: list[str]) -> dict:
    base = [sys.executable, "-m", "rnnlab", *task_args, "--json"]
    single = _train_seconds(base)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "rnnlab", *task_args, "--json"]
    multi = _train_seconds(launcher)
    return {"command": " ".join(["rnnlab", *task_args]), "processes": nproc, "one_process_s": single,
            f"{nproc}_processes_s": multi, "speedup": single / multi, "cores": os.cpu_count()}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench-ddp", help="speed-up of N torchrun processes over one on the same run",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("task_args", nargs="*", default=None,
                   help="the training command (default: toy --cell lstm --samples 8192 --epochs 3 --hidden 128)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    task_args = args.task_args or ["toy", "--cell", "lstm", "--samples", "8192", "--epochs", "3", "--hidden", "128"]
    result = run(args.nproc, task_args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['command']}: 1 process {result['one_process_s']:.2f} s, {args.nproc} processes "
              f"{result[f'{args.nproc}_processes_s']:.2f} s, speed-up {result['speedup']:.2f}x on {result['cores']} cores")
    return 0
