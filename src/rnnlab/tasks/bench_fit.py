"""``rnnlab bench-fit``: the same Keras program timed under rnnlab.keras and under Keras 3 (torch backend).

The program is a stacked LSTM with Dropout fitted on a sine-mixture forecasting window task. It
is written once, with Keras imports; for rnnlab only its import lines are rewritten (the same
rewrite the test suite uses). Both runs happen in this one process, one after the other, with
the same data, epochs and batch size; the figure is the ratio of their ``fit`` wall times.
"""
from __future__ import annotations

import json
import os
import time

from rnnlab.keras.porting import port_imports

PROGRAM = """
import numpy as np
import keras
from keras import layers
keras.utils.set_random_seed(0)
t = np.arange(N_POINTS + 60, dtype="float32")
series = np.sin(0.1 * t) + 0.5 * np.sin(0.033 * t)
X = np.stack([series[i:i + STEPS] for i in range(N_POINTS)])[..., None]
y = series[STEPS:STEPS + N_POINTS][:, None]
model = keras.Sequential([
    keras.Input(shape=(STEPS, 1)),
    layers.LSTM(HIDDEN, return_sequences=True),
    layers.Dropout(0.1),
    layers.LSTM(HIDDEN),
    layers.Dense(1),
])
model.compile(optimizer="adam", loss="mse")
model.fit(X[:10], y[:10], epochs=1, batch_size=BATCH, verbose=0)       # warm-up (build, first call)
start = time.perf_counter()
history = model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
fit_seconds = time.perf_counter() - start
final_loss = float(history.history["loss"][-1])
"""


def _run(source: str, settings: dict) -> dict:
    scope = {"time": time, **settings}
    exec(compile(source, "<keras program>", "exec"), scope)
    return {"fit_seconds": scope["fit_seconds"], "final_loss": scope["final_loss"]}


def run(n_points=2000, steps=50, hidden=64, epochs=3, batch=32) -> dict:
    settings = {"N_POINTS": n_points, "STEPS": steps, "HIDDEN": hidden, "EPOCHS": epochs, "BATCH": batch}
    result = {"settings": settings, "rnnlab": _run(port_imports(PROGRAM), settings)}
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras  # noqa: F401
    except ImportError:
        result["keras"] = None
        result["ratio_rnnlab_over_keras"] = None
        return result
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras was imported with backend {keras.backend.backend()!r}; run with KERAS_BACKEND=torch")
    result["keras"] = _run(PROGRAM, settings)
    result["keras_version"] = keras.__version__
    result["ratio_rnnlab_over_keras"] = result["rnnlab"]["fit_seconds"] / result["keras"]["fit_seconds"]
    return result


def register(subparsers) -> None:
    p = subparsers.add_parser("bench-fit", help="time one stacked-LSTM Keras program: rnnlab.keras vs Keras 3 (torch)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    result = run(args.points, args.steps, args.hidden, args.epochs, args.batch_size)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"program: stacked LSTM({args.hidden}) x2 + Dropout, {args.points} windows of {args.steps} steps, "
          f"{args.epochs} epochs, batch {args.batch_size}")
    print(f"rnnlab.keras fit: {result['rnnlab']['fit_seconds']:.2f} s (final loss {result['rnnlab']['final_loss']:.4g})")
    if result["keras"] is None:
        print("Keras 3 is not installed: pip install keras (its torch backend is used)")
    else:
        print(f"Keras {result['keras_version']} (torch) fit: {result['keras']['fit_seconds']:.2f} s "
              f"(final loss {result['keras']['final_loss']:.4g})")
        print(f"ratio rnnlab / Keras = {result['ratio_rnnlab_over_keras']:.2f}")
    return 0
