"""Decoding hand velocity from real motor-cortex recordings (shared/data/motor-cortex, by path)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.brain.recordings import default_data_dir, load_recording
from rnnlab.errors import RnnlabError
from rnnlab.metrics.motor import r2_score

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/motor-cortex not beside the checkout")


def test_recording_shapes_from_the_readme():
    rec = load_recording(DATA, "C")
    assert rec.train.spikes.shape == (1200, 71) and rec.test.spikes.shape == (1818, 71)
    assert rec.train.velocity.shape == (1200, 2)
    assert len(rec.train.segments) == 37 and len(rec.test.segments) == 56


def test_r2_against_hand_computed():
    y = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]])
    assert r2_score(y, y) == pytest.approx(1.0)
    assert r2_score(y, np.tile(y.mean(0), (3, 1))) == pytest.approx(0.0)


def test_bad_path_is_a_clear_error(tmp_path):
    with pytest.raises(RnnlabError):
        load_recording(tmp_path / "nope", "C")


def test_rnn_decoders_beat_wiener_and_kalman_on_subject_c(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rnnlab", "motor", "decode", "--data", str(DATA), "--json",
                           "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    r2 = json.loads(done.stdout)["r2"]
    best = max(r2["lstm"], r2["gru"])
    assert 0.45 < r2["wiener"] < 0.65  # the README's ridge Wiener filter range
    assert best >= r2["wiener"] + 0.05 and best >= r2["kalman"]
    assert (tmp_path / "decoding.png").stat().st_size > 10_000
