"""Distributed data parallel: two torchrun processes (gloo, loopback) = one process, same global batch."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab.train import load_checkpoint

ARGS = ["toy", "--cell", "lstm", "--samples", "320", "--epochs", "2", "--batch-size", "32", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "rnnlab", *ARGS, "--run-dir", str(single)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())]
    done = _run([*torchrun, "-m", "rnnlab", *ARGS, "--run-dir", str(ddp)])
    # only rank 0 speaks
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1
    a = load_checkpoint(single / "checkpoints" / "last.safetensors")["model"]
    b = load_checkpoint(ddp / "checkpoints" / "last.safetensors")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)
    # one set of checkpoints, written once (rank 0): no stray temporary files from a second writer
    files = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert files == sorted(p.name for p in (single / "checkpoints").iterdir())
    assert not any(name.endswith(".tmp") for name in files)
