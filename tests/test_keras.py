"""Keras programs run on rnnlab after changing only their imports, and reach Keras-level quality."""
import textwrap

import numpy as np
import pytest
import torch

from rnnlab.errors import RnnlabError
from rnnlab.keras import callbacks as kcb
from rnnlab.keras.layers import GRU, LSTM, Bidirectional, Dense, Embedding, Input, Masking, SimpleRNN
from rnnlab.keras.models import Model, Sequential, load_model
from rnnlab.keras.porting import port_imports
from rnnlab.keras.utils import to_categorical
from rnnlab.train import CheckpointError


def run_keras_program(source: str) -> dict:
    """Swap a Keras program's imports for rnnlab.keras (nothing else) and run it."""
    ported = port_imports(source)
    body = lambda text: [l for l in textwrap.dedent(text).splitlines() if not l.strip().startswith(("import ", "from "))]
    assert body(source) == body(ported) and "tensorflow" not in ported
    scope: dict = {}
    exec(compile(ported, "<keras program>", "exec"), scope)
    return scope


def test_sequential_regression():
    s = run_keras_program("""
        import numpy as np
        from tensorflow.keras.models import Sequential
        from tensorflow.keras.layers import LSTM, Dense
        from tensorflow.keras.utils import set_random_seed
        set_random_seed(0)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(1000, 12, 1)).astype("float32")
        y = X.mean(axis=1) * 3
        model = Sequential([LSTM(32, input_shape=(12, 1)), Dense(1)])
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        model.fit(X[:800], y[:800], epochs=20, batch_size=32, verbose=0)
        loss, mae = model.evaluate(X[800:], y[800:], verbose=0)
    """)
    assert s["loss"] < 0.03, s["loss"]  # variance of y is 0.75


def test_binary_classification_with_simple_rnn():
    s = run_keras_program("""
        import numpy as np
        import keras
        from keras import layers
        keras.utils.set_random_seed(1)
        rng = np.random.default_rng(1)
        X = rng.normal(size=(2200, 10, 2)).astype("float32")
        y = (X[:, :, 0].sum(axis=1) > 0).astype("float32")
        model = keras.Sequential([keras.Input(shape=(10, 2)), layers.SimpleRNN(16), layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="binary_crossentropy", metrics=["accuracy"])
        model.fit(X[:2000], y[:2000], epochs=15, batch_size=32, verbose=0)
        loss, acc = model.evaluate(X[2000:], y[2000:], verbose=0)
    """)
    assert s["acc"] > 0.9, s["acc"]


def test_categorical_classification_with_gru_and_one_hot():
    s = run_keras_program("""
        import numpy as np
        from tensorflow.keras.models import Sequential
        from tensorflow.keras.layers import GRU, Dense
        from tensorflow.keras.utils import to_categorical, set_random_seed
        set_random_seed(2)
        rng = np.random.default_rng(2)
        X = rng.normal(size=(1200, 8, 3)).astype("float32")
        labels = X[:, :, :].sum(axis=1).argmax(axis=1)          # which channel summed highest
        Y = to_categorical(labels, 3)
        model = Sequential([GRU(24, input_shape=(8, 3)), Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(X[:1000], Y[:1000], epochs=20, batch_size=32, verbose=0, validation_split=0.1)
        loss, acc = model.evaluate(X[1000:], Y[1000:], verbose=0)
    """)
    assert s["acc"] > 0.9, s["acc"]


def test_per_step_softmax_with_time_distributed():
    s = run_keras_program("""
        import numpy as np
        from keras.models import Sequential
        from keras.layers import LSTM, Dense, TimeDistributed
        from keras.utils import set_random_seed
        set_random_seed(3)
        rng = np.random.default_rng(3)
        X = rng.integers(0, 3, size=(1000, 15)).astype("int64")
        Y = np.roll(X, 2, axis=1); Y[:, :2] = 0                # echo the symbol seen two steps ago
        Xo = np.eye(3, dtype="float32")[X]
        model = Sequential([LSTM(32, return_sequences=True, input_shape=(15, 3)),
                            TimeDistributed(Dense(3, activation="softmax"))])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(Xo[:800], Y[:800], epochs=15, batch_size=32, verbose=0)
        loss, acc = model.evaluate(Xo[800:], Y[800:], verbose=0)
    """)
    assert s["acc"] > 0.95, s["acc"]


def test_functional_stacked_lstm_with_dropout():
    s = run_keras_program("""
        import numpy as np
        from tensorflow import keras
        from tensorflow.keras import layers
        keras.utils.set_random_seed(4)
        t = np.arange(3000, dtype="float32")
        series = np.sin(0.1 * t) + 0.5 * np.sin(0.033 * t)
        X = np.stack([series[i:i + 30] for i in range(2000)])[..., None]
        y = series[30:2030][:, None]
        inputs = keras.Input(shape=(30, 1))
        h = layers.LSTM(32, return_sequences=True)(inputs)
        h = layers.Dropout(0.1)(h)
        h = layers.LSTM(16)(h)
        outputs = layers.Dense(1)(h)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="mse")
        model.fit(X[:1600], y[:1600], epochs=12, batch_size=32, verbose=0,
                  validation_data=(X[1600:], y[1600:]))
        mse = model.evaluate(X[1600:], y[1600:], verbose=0)
    """)
    assert s["mse"] < 0.01, s["mse"]


def test_masking_skips_padding():
    torch.manual_seed(0)
    model = Sequential([Embedding(20, 4, mask_zero=True), LSTM(5)])
    seq = np.array([[3, 7, 9]])
    padded_pre = np.array([[0, 0, 3, 7, 9]])
    padded_post = np.array([[3, 7, 9, 0, 0]])
    a, b, c = (model.predict(v) for v in (seq, padded_pre, padded_post))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    m2 = Sequential([Masking(0.0, input_shape=(4, 1)), GRU(3, return_sequences=True)])
    out = m2.predict(np.array([[[1.0], [0.0], [2.0], [0.0]]], dtype="float32"))
    assert np.all(out[0, 1] == 0) and np.all(out[0, 3] == 0) and np.any(out[0, 2] != 0)


def test_go_backwards_bidirectional_and_return_state():
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    inp = Input(shape=(6, 3))
    out, h, c = LSTM(4, return_state=True)(inp)
    model = Model(inp, [out, h, c])
    o, hh, cc = (v.detach().numpy() for v in model(torch.tensor(x)))
    np.testing.assert_allclose(o, hh)
    back = Sequential([SimpleRNN(4, go_backwards=True, input_shape=(6, 3))])
    fwd = Sequential([SimpleRNN(4, input_shape=(6, 3))])
    fwd.set_weights(back.get_weights())
    np.testing.assert_allclose(back.predict(x), fwd.predict(x[:, ::-1].copy()), atol=1e-6)
    bi = Sequential([Bidirectional(GRU(5, return_sequences=True), input_shape=(6, 3))])
    assert bi.predict(x).shape == (2, 6, 10)
    assert Sequential([Bidirectional(GRU(5), merge_mode="sum", input_shape=(6, 3))]).predict(x).shape == (2, 5)


def test_stateful_carries_state_until_reset():
    model = Sequential([LSTM(3, stateful=True, input_shape=(2, 1)), Dense(1)])
    x = np.ones((1, 2, 1), dtype="float32")
    first, second = model.predict(x), model(torch.tensor(x)).detach().numpy()
    assert not np.allclose(first, second)
    model.reset_states()
    np.testing.assert_allclose(model(torch.tensor(x)).detach().numpy(), first, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 5, 2)).astype("float32")
    seq = Sequential([GRU(6, return_sequences=True, input_shape=(5, 2)), LSTM(4), Dense(2, activation="softmax")])
    seq.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seq.save(tmp_path / "seq.keras")
    again = load_model(tmp_path / "seq.keras")
    np.testing.assert_array_equal(seq.predict(x), again.predict(x))
    assert again.evaluate(x, np.zeros(8, dtype="int64"), verbose=0)  # compiled on load
    inp = Input(shape=(5, 2))
    out = Dense(1)(Bidirectional(SimpleRNN(3))(inp))
    fun = Model(inp, out)
    fun.save(tmp_path / "fun.keras")
    np.testing.assert_array_equal(fun.predict(x), load_model(tmp_path / "fun.keras").predict(x))
    data = (tmp_path / "fun.keras").read_bytes()
    (tmp_path / "broken.keras").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="broken.keras"):
        load_model(tmp_path / "broken.keras")


def test_input_shape_mismatch_names_both_shapes():
    model = Sequential([LSTM(8, input_shape=(1, 10)), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(RnnlabError, match=r"expects input of shape \(batch, 1, 10\).*got data of shape \(4, 10, 1\)"):
        model.fit(np.zeros((4, 10, 1), dtype="float32"), np.zeros((4, 1)), verbose=0)
    with pytest.raises(RnnlabError, match="must be compiled"):
        Sequential([Dense(1, input_shape=(3,))]).fit(np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(RnnlabError, match="activation must be one of"):
        LSTM(3, activation="relu")


def test_summary_lists_layers_shapes_and_params(capsys):
    Sequential([LSTM(8, input_shape=(5, 2), return_sequences=True), Dense(3)]).summary()
    text = capsys.readouterr().out
    assert "(None, 5, 8)" in text and "(None, 5, 3)" in text and f"{4 * (8 * 2 + 8 * 8 + 16) + 27:,}" in text


def test_to_categorical():
    np.testing.assert_array_equal(to_categorical([0, 2, 1], 3), np.eye(3)[[0, 2, 1]])
    with pytest.raises(RnnlabError, match="num_classes=2"):
        to_categorical([0, 2], 2)


# --- callbacks: each test would fail without the callback's effect ----------------------------------


def _tiny(seed=0, lr=0.01):
    torch.manual_seed(seed)
    m = Sequential([SimpleRNN(4, input_shape=(3, 1)), Dense(1)])
    m.compile(optimizer=__import__("rnnlab.keras", fromlist=["optimizers"]).optimizers.SGD(learning_rate=lr), loss="mse")
    x = np.random.default_rng(seed).normal(size=(64, 3, 1)).astype("float32")
    return m, x, x.sum(1)


def test_early_stopping_stops_and_restores_best():
    m, x, y = _tiny(lr=0.0)  # nothing improves
    h = m.fit(x, y, epochs=20, verbose=0, validation_data=(x, y), callbacks=[kcb.EarlyStopping(patience=2)])
    assert len(h.history["loss"]) == 3
    m, x, y = _tiny(lr=0.05)
    stopper = kcb.EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    m.fit(x, y, epochs=8, verbose=0, validation_data=(x, y), callbacks=[stopper])
    assert m.evaluate(x, y, verbose=0) == pytest.approx(stopper.best, rel=1e-5)


def test_model_checkpoint_saves_only_improvements(tmp_path):
    m, x, y = _tiny(lr=0.0)
    ckpt = kcb.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"), monitor="loss", save_best_only=True)
    m.fit(x, y, epochs=3, verbose=0, callbacks=[ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.keras"]  # epochs 2, 3 did not improve
    np.testing.assert_allclose(load_model(tmp_path / "m-1.keras").predict(x), m.predict(x), atol=1e-6)


def test_reduce_lr_on_plateau_and_scheduler():
    m, x, y = _tiny(lr=0.0)
    m.compile(optimizer=__import__("rnnlab.keras.optimizers", fromlist=["SGD"]).SGD(learning_rate=1e-9), loss="mse")
    h = m.fit(x, y, epochs=4, verbose=0, callbacks=[kcb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)])
    assert h.history["lr"][-1] < 1e-9
    m, x, y = _tiny()
    h = m.fit(x, y, epochs=3, verbose=0, callbacks=[kcb.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_csv_logger_and_terminate_on_nan(tmp_path):
    m, x, y = _tiny()
    m.fit(x, y, epochs=3, verbose=0, callbacks=[kcb.CSVLogger(tmp_path / "log.csv")])
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 4
    m, x, y = _tiny(lr=1e6)
    h = m.fit(x, y * 1e20, epochs=10, batch_size=8, verbose=0, callbacks=[kcb.TerminateOnNaN()])
    assert len(h.history.get("loss", [])) < 10  # stopped, where on_nan="raise" would have raised
    m, x, y = _tiny(lr=1e6)
    with pytest.raises(RnnlabError, match="loss is (nan|inf)"):
        m.fit(x, y * 1e20, epochs=10, batch_size=8, verbose=0)
