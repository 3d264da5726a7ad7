"""The speech embedding (rnnlab.data.speech_embedding) recomputed by the ONNX graphs it was taken from.

``make install`` puts openWakeWord's two ONNX graphs and the converted weights in the models folder;
onnxruntime (what openWakeWord runs them with) runs the graphs, and the torch module and the numpy
log-mel must give the same numbers."""
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("librosa")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rnnlab.data import speech_embedding as se  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402

INSTALLED = (se.model_dir() / se.WEIGHTS).is_file()
needs_weights = pytest.mark.skipif(not INSTALLED, reason=f"no {se.WEIGHTS} in {se.model_dir()}: run 'make install'")


def _graph(name: str):
    return ort.InferenceSession(str(se.model_dir() / name), providers=["CPUExecutionProvider"])


def _speechlike(seconds: float, rate: int = se.RATE, seed: int = 0) -> np.ndarray:
    """A voiced, gliding tone with noise: energy across the mel bands, not a constant spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 60 * t / seconds
    y = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 20))
    return (0.1 * y * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@needs_weights
def test_log_mel_equals_the_onnx_melspectrogram():
    y = _speechlike(1.3)
    (ref,) = _graph("melspectrogram.onnx").run(None, {"input": (y * 32767)[None]})
    ref = ref.squeeze() / 10 + 2  # openWakeWord's scaling of the graph's dB
    ours = se.log_mel(y)
    assert ours.shape == ref.shape == ((len(y) - se.N_FFT) // se.HOP + 1, se.N_MELS)
    assert np.abs(ours - ref).max() < 1e-4


@needs_weights
def test_embedding_equals_the_onnx_graph_window_by_window():
    spec = se.log_mel(_speechlike(1.3))
    windows = np.stack([spec[i:i + se.WINDOW] for i in range(0, len(spec) - se.WINDOW + 1, se.STRIDE)])
    (ref,) = _graph("embedding_model.onnx").run(None, {"input_1": windows[..., None].astype(np.float32)})
    ref = ref.reshape(len(windows), se.DIM)
    with torch.no_grad():  # the whole utterance at once gives every window's embedding
        ours = se.load_speech_embedding()(torch.from_numpy(spec).unsqueeze(0))[0].numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())


@needs_weights
def test_embed_shapes_rates_and_short_words():
    y8 = _speechlike(0.5, 8000)
    e = se.embed(y8, 8000)
    samples = 2 * len(y8) + 2 * int(se.PAD_SECONDS * se.RATE)
    frames = (samples - se.N_FFT) // se.HOP + 1
    assert e.shape == ((frames - se.WINDOW) // se.STRIDE + 1, se.DIM) and np.isfinite(e).all()
    assert se.embed(np.zeros(80, np.float32), 8000).shape == (1, se.DIM)  # 10 ms still fills one window
    with pytest.raises(RnnlabError, match="rate"):
        se.embed(y8, 44100)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # a word runs on one thread (the same numbers), and torch's thread count is left as the caller set it
        assert np.array_equal(se.embed(y8, 8000), e) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@needs_weights
def test_install_from_a_wheel_gives_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "openwakeword-0.4.0-py3-none-any.whl", "w") as archive:
        for name, member in se.MEMBERS.items():
            archive.write(se.model_dir() / name, member)
    dest = se.install(tmp_path / "models", wheels)
    new, old = load_file(str(dest / se.WEIGHTS)), load_file(str(se.model_dir() / se.WEIGHTS))
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    with pytest.raises(RnnlabError, match="convolutions"):  # another graph is refused, not half-read
        se.onnx_weights(dest / "melspectrogram.onnx")
    with pytest.raises(RnnlabError, match="no wheel of openwakeword"):
        se.install(tmp_path / "other", tmp_path)


def test_missing_weights_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_MODELS", str(tmp_path))
    se.load_speech_embedding.cache_clear()
    try:
        with pytest.raises(RnnlabError, match="make install"):
            se.load_speech_embedding()
    finally:
        se.load_speech_embedding.cache_clear()  # the next caller loads from its own folder


def test_the_network_refuses_too_few_frames():
    with pytest.raises(RnnlabError, match="76"):
        se.SpeechEmbedding()(torch.zeros(1, 40, se.N_MELS))
