"""Distributed data parallel: two torchrun processes (gloo, loopback) = one process, same global batch.

The Trainer-level test launches this file itself under torchrun (``python -m torch.distributed.run
... tests/test_distributed.py worker OUT``); each rank trains a small ``rnnlab.LSTM`` and saves its
final weights into OUT, and the test compares them with the same training in this process.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.train import Trainer, load_checkpoint, seed_everything
from rnnlab.train import distributed as dist_utils
from rnnlab.train.lr_finder import lr_range_test

ARGS = ["toy", "--cell", "lstm", "--samples", "320", "--epochs", "2", "--batch-size", "32", "--json"]
GLOBAL_BATCH = 12  # 40 samples: 3 full global batches and a last one of 4 (2 per rank)
SKIPPED_STEP = 1   # in the second fit, rank 1 alone sees a NaN loss at this step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]


def _run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A hang (a rank waiting in all-reduce for a peer that left the step) ends as a timeout failure.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# -- the training both sides run -----------------------------------------------------------------


class _LastStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnlab.LSTM(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _data():
    g = torch.Generator().manual_seed(7)
    return torch.randn(40, 6, 3, generator=g), torch.randn(40, 2, generator=g)


def _train(run_dir, nan_on_rank=None):
    """Two epochs of Adam on a small LSTM; with ``nan_on_rank`` that rank's loss is NaN at SKIPPED_STEP."""
    seed_everything(0)
    model = _LastStep()
    steps = {"n": 0}

    def loss(pred, target):
        value = nn.functional.mse_loss(pred, target)
        rank = dist_utils.rank_and_world()[0]
        if steps["n"] == SKIPPED_STEP and nan_on_rank in (rank, "all"):
            value = value * float("nan")
        steps["n"] += 1
        return value

    trainer = Trainer(model, loss, learning_rate=1e-2, seed=0, run_dir=run_dir, on_nan="skip", clipnorm=1.0)
    with pytest.warns(UserWarning, match="batch skipped") if nan_on_rank is not None else _nothing():
        history = trainer.fit(*_data(), epochs=2, batch_size=GLOBAL_BATCH, validation_data=_data(), verbose=0)
    return trainer, history.history


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _worker(out: Path) -> None:
    """Run by each torchrun rank: save this rank's weights and what it saw."""
    assert dist_utils.init_from_env(), "not launched by torchrun"
    rank, world = dist_utils.rank_and_world()
    # Each rank gets its own run folder here only so the test can see which ranks wrote (in real
    # runs all ranks share one); the trainer must write from rank 0 alone.
    trainer, history = _train(out / f"run-rank{rank}")
    torch.save(trainer.model.state_dict(), out / f"weights-rank{rank}.pt")
    # Second fit: only rank 1 gets a NaN loss at one step; every rank must skip that step together.
    skipped, _ = _train(None, nan_on_rank=1)
    torch.save(skipped.model.state_dict(), out / f"skipped-rank{rank}.pt")
    curve = _range_test()
    (out / f"history-rank{rank}.json").write_text(json.dumps({"world": world, "history": history, "curve": curve}))


def _range_test() -> list[float]:
    trainer, _ = _train(None)
    return lr_range_test(trainer, *_data(), 1e-4, 1.0, num_steps=12, batch_size=GLOBAL_BATCH).raw_losses


def test_trainer_under_torchrun_equals_one_process_and_only_rank0_writes(tmp_path):
    _run([*_torchrun(), __file__, "worker", str(tmp_path)])
    single, single_history = _train(tmp_path / "single")
    single_curve = _range_test()
    assert len(single_curve) == 12
    expected = single.model.state_dict()
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"history-rank{rank}.json").read_text())
        assert seen["world"] == 2  # really two processes, not two single runs
        weights = torch.load(tmp_path / f"weights-rank{rank}.pt", weights_only=True)
        for name, value in expected.items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=f"rank {rank}: {name}")
        # losses are reduced across ranks: both ranks log the single process's numbers
        for key in ("loss", "val_loss"):
            assert seen["history"][key] == pytest.approx(single_history[key], abs=1e-5), key
        # the range test shards the batches too: every rank sees the one-process curve
        assert seen["curve"] == pytest.approx(single_curve, abs=1e-5)
    # only rank 0 wrote a run folder: one checkpoint set, the same files as the single run
    assert not (tmp_path / "run-rank1").exists()
    written = sorted(p.name for p in (tmp_path / "run-rank0" / "checkpoints").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "single" / "checkpoints").iterdir())
    assert "last.safetensors" in written and not any(n.endswith(".tmp") for n in written)
    # a NaN on one rank skips the step on every rank (no rank left waiting), as a NaN in one process would
    skipped_single, _ = _train(None, nan_on_rank="all")
    for rank in (0, 1):
        weights = torch.load(tmp_path / f"skipped-rank{rank}.pt", weights_only=True)
        for name, value in skipped_single.model.state_dict().items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=f"skip, rank {rank}: {name}")


def test_rnnlab_command_under_torchrun_equals_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "rnnlab", *ARGS, "--run-dir", str(single)])
    done = _run([*_torchrun(), "-m", "rnnlab", *ARGS, "--run-dir", str(ddp)])
    # only rank 0 speaks
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1
    a = load_checkpoint(single / "checkpoints" / "last.safetensors")["model"]
    b = load_checkpoint(ddp / "checkpoints" / "last.safetensors")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)
    files = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert files == sorted(p.name for p in (single / "checkpoints").iterdir())


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]))
