"""Nothing lost: a run killed mid-epoch resumes to the same weights as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnlab.tasks import toy
from rnnlab.train import Callback, load_checkpoint

ARGS = ["toy", "--cell", "gru", "--samples", "6000", "--steps", "30", "--epochs", "4", "--json"]


def _rnnlab(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "rnnlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.safetensors")["model"]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _rnnlab(*ARGS, "--run-dir", str(full)).wait(timeout=300) == 0
    proc = _rnnlab(*ARGS, "--run-dir", str(cut))
    first = cut / "checkpoints" / "epoch-0001.safetensors"
    deadline = time.monotonic() + 240
    while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)  # well inside epoch 2
    assert proc.poll() is None, "the run ended before it could be killed; make the epochs longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(cut / "checkpoints" / "last.safetensors")
    assert state["epoch"] < 3  # really interrupted
    resumed = _rnnlab(*ARGS, "--run-dir", str(cut), "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    for name, value in _weights(full).items():
        assert torch.equal(value, _weights(cut)[name]), name


class _Crash(Callback):
    def on_batch_end(self, batch, logs=None):
        if self.trainer.history.epoch == [0] and batch == 5:
            raise RuntimeError("simulated crash")


def test_mid_epoch_checkpoint_resumes_exactly(tmp_path):
    config = toy.Config(cell="lstm", samples=640, epochs=3, batch_size=32)

    def fit(run_dir, callbacks=(), resume=False):
        trainer, train, val = toy.build(config, callbacks, run_dir=run_dir)
        trainer.checkpoint_every_s = 0.0  # a checkpoint after every batch
        trainer.fit(*train, epochs=config.epochs, batch_size=config.batch_size, verbose=0, resume=resume)
        return trainer.model.state_dict()

    reference = fit(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "b", callbacks=[_Crash()])
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert (state["epoch"], state["batch"]) == (1, 5)  # mid-epoch 2
    resumed = fit(tmp_path / "b", resume=True)
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name
