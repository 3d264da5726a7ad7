"""Property-based tests: random shapes, lengths and values thrown at the layers, the trainer and
the Keras facade. Each call either succeeds or raises rnnlab's own RnnlabError, never an internal
crash (a bare torch RuntimeError, IndexError, ...)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.train import Trainer

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYERS = [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU, rnnlab.CTRNN]
floats = st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, math.nan, math.inf, 1e-30])


def _tensor(shape, fill, dtype):
    if dtype == "long":
        return torch.ones(shape, dtype=torch.long)
    t = torch.randn(shape, dtype=torch.float64 if dtype == "double" else torch.float32)
    if fill is not None and t.numel():
        t.view(-1)[0] = fill
    return t


@EXAMPLES
@given(
    layer=st.sampled_from(LAYERS),
    batch=st.integers(0, 4), steps=st.integers(0, 6), features=st.integers(1, 4), declared=st.integers(1, 4),
    hidden=st.integers(1, 5), num_layers=st.integers(1, 2), bidirectional=st.booleans(),
    rank=st.sampled_from([1, 2, 3, 4]), fill=st.one_of(st.none(), floats),
    dtype=st.sampled_from(["float", "double", "long"]),
    lengths=st.one_of(st.none(), st.lists(st.integers(-2, 8), min_size=0, max_size=5)),
    impl=st.sampled_from(["reference", "fused", "auto"]),
)
def test_layers_succeed_or_raise_rnnlab_error(layer, batch, steps, features, declared, hidden, num_layers,
                                              bidirectional, rank, fill, dtype, lengths, impl):
    try:
        module = layer(declared, hidden, num_layers=num_layers, bidirectional=bidirectional, impl=impl)
        if dtype == "double":
            module = module.double()
        shape = [(batch * steps * features,), (batch, features), (batch, steps, features), (batch, steps, features, 1)][rank - 1]
        out, state = module(_tensor(shape, fill, dtype), lengths=lengths)
    except RnnlabError:
        return
    # success: shapes are the documented ones
    d = 2 if bidirectional else 1
    assert out.shape == (batch, steps, d * hidden)
    h = state[0] if isinstance(state, tuple) else state
    assert h.shape == (num_layers * d, batch, hidden)


@EXAMPLES
@given(
    n=st.integers(0, 12), steps=st.integers(1, 5), features=st.integers(1, 3), y_n=st.integers(0, 12),
    fill=st.one_of(st.none(), floats), batch_size=st.integers(-1, 8),
    loss=st.sampled_from(["mse", "mae", "binary_crossentropy", "sparse_categorical_crossentropy", "unknown"]),
    y_kind=st.sampled_from(["float", "int", "text", "none"]),
)
def test_trainer_succeeds_or_raises_rnnlab_error(n, steps, features, y_n, fill, batch_size, loss, y_kind):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnlab.GRU(features, 3)
            self.head = torch.nn.Linear(3, 2 if loss == "sparse_categorical_crossentropy" else 1)

        def forward(self, x):
            out = self.head(self.rnn(x)[0][:, -1])
            return torch.softmax(out, -1) if out.shape[-1] == 2 else torch.sigmoid(out)

    x = np.random.default_rng(0).normal(size=(n, steps, features)).astype("float32")
    if fill is not None and x.size:
        x.flat[0] = fill
    y = {"float": np.random.default_rng(1).random((y_n, 1)), "int": np.zeros(y_n, dtype=np.int64),
         "text": np.array(["a"] * y_n), "none": None}[y_kind]
    try:
        trainer = Trainer(Net(), loss, learning_rate=1e-3)
        trainer.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
        trainer.evaluate(x, y)
        assert trainer.predict(x).shape[0] == n
    except RnnlabError:
        return


@settings(max_examples=200, deadline=None)
@given(t=st.integers(1, 6), pad=st.integers(0, 4), where=st.sampled_from(["pre", "post"]), cell=st.sampled_from(["SimpleRNN", "LSTM", "GRU"]))
def test_keras_masking_ignores_padding(t, pad, where, cell):
    from rnnlab.keras import layers as kl
    from rnnlab.keras.models import Sequential

    torch.manual_seed(0)
    model = Sequential([kl.Embedding(10, 3, mask_zero=True), getattr(kl, cell)(4)])
    seq = list(range(1, t + 1))
    padded = [0] * pad + seq if where == "pre" else seq + [0] * pad
    a = model.predict(np.array([seq]))
    b = model.predict(np.array([padded]))
    np.testing.assert_allclose(a, b, atol=1e-5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                                st.sampled_from(["", "NA", "abc", "1e3", " ", "nan", "-"])), max_size=30),
       column=st.sampled_from(["v", "missing"]), missing=st.sampled_from(["interpolate", "error", "bogus"]))
def test_series_csv_loader_succeeds_or_raises_rnnlab_error(tmp_path_factory, cells, column, missing):
    from rnnlab.data.series import chronological_split, load_csv

    path = tmp_path_factory.mktemp("csv") / "s.csv"
    path.write_text("v\n" + "\n".join(str(c) for c in cells) + ("\n" if cells else ""))
    try:
        series = load_csv(path, column, missing=missing)
        assert np.isfinite(series.values).all()
        chronological_split(series, lookback=3, horizon=2)
    except RnnlabError:
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), repeat=st.integers(1, 40))
def test_text_file_loader_succeeds_or_raises_rnnlab_error(tmp_path_factory, data, repeat):
    from rnnlab.data.text import CharVocab, file_split
    from rnnlab.tasks.generate import tbptt_layout

    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_bytes(data * repeat)
    try:
        split = file_split(path)
        vocab = CharVocab.build(split.train)
        ids = vocab.encode(split.test)
        assert ((ids >= 0) & (ids < len(vocab))).all()
        tbptt_layout(vocab.encode(split.train), 8, 16)
    except RnnlabError:
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=150))
def test_translation_tsv_loader_succeeds_or_raises_rnnlab_error(tmp_path_factory, lines):
    from rnnlab.data.translation import split_pairs, tsv_pairs, unmask

    path = tmp_path_factory.mktemp("tsv") / "pairs.tsv"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        pairs = tsv_pairs(path)
        split_pairs(pairs, min_test=10)
        for p in pairs:
            unmask(p.target, p.placeholders)
    except RnnlabError:
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["bytes", "wav"]), data=st.binary(max_size=2000),
       samples=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=400),
       rate=st.sampled_from([1000, 8000, 11025, 44100]), channels=st.integers(1, 2))
def test_audio_loader_succeeds_or_raises_rnnlab_error(tmp_path_factory, kind, data, samples, rate, channels):
    """Random bytes, or WAV files of random (NaN, huge, empty, silent) samples at any rate."""
    sf = pytest.importorskip("soundfile")
    from rnnlab.data.speech import features, load_audio

    path = tmp_path_factory.mktemp("audio") / "x.wav"
    if kind == "bytes":
        path.write_bytes(data)
    else:
        y = np.array(samples, dtype=np.float32).reshape(-1, 1).repeat(channels, 1)
        sf.write(str(path), y, rate, subtype="FLOAT")
    try:
        y = load_audio(path)
        assert y.ndim == 1 and np.isfinite(y).all()
        assert np.isfinite(features(y)).all()
    except RnnlabError:
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(["Ytr", "Xtr", "Ttr", "Yte", "Xte", "Tte", "other"]), unique=True),
       rows=st.lists(st.integers(0, 5), min_size=7, max_size=7), cols=st.lists(st.integers(0, 3), min_size=7, max_size=7),
       fill=st.sampled_from([0.0, 1.0, np.nan, np.inf]), raw=st.one_of(st.none(), st.binary(max_size=300)))
def test_recordings_loader_succeeds_or_raises_rnnlab_error(tmp_path_factory, keys, rows, cols, fill, raw):
    """.mat files with keys missing, shapes that disagree, NaN/inf values, or random bytes."""
    import scipy.io

    from rnnlab.brain.recordings import load_recording

    path = tmp_path_factory.mktemp("mat") / "rec.mat"
    if raw is not None:
        path.write_bytes(raw)
    else:
        scipy.io.savemat(path, {k: np.full((rows[i], cols[i]), fill) for i, k in enumerate(keys)})
    try:
        rec = load_recording(path)
        assert rec.train.velocity.shape[1] == 2 and np.isfinite(rec.train.spikes).all()
    except RnnlabError:
        return
