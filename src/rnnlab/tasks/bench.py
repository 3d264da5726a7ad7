"""``rnnlab bench``: time every cell's paths against torch.nn, Keras and the GEMM floor, in one process.

For each (batch, steps, inputs, hidden) of the grid and each cell it times, forward (under
``no_grad``) and forward+backward (``out.sum().backward()``), the median of interleaved repeats:

* ``torch``: ``torch.nn.RNN / LSTM / GRU`` (batch-first), the peer (cuDNN on a GPU);
* ``keras``: the same layer in Keras 3 on its torch backend (when keras is importable);
* ``reference``: rnnlab's cell equations step by step (``impl="reference"``);
* ``fused``: rnnlab's fastest path (``impl="fused"``; minGRU/minLSTM: ``mode="auto"``, and the
  ``scan`` and ``sequential`` modes separately, with ``mode`` saying which one auto chose);
* ``floor``: only the matrix multiplies a recurrent layer cannot avoid: one input projection for all
  steps plus one recurrent matmul per step, and backward the matching gradient matmuls (``dx`` and
  ``dW_ih`` as one GEMM each, one ``dh @ W_hh`` per step, ``dW_hh`` as one GEMM).

For minGRU/minLSTM the peer is rnnlab's fused LSTM at the same sizes (``lstm_over_fused`` = how many
times faster the min cell trains); the extra point (16, 1000, 32, 128) is there for that comparison.
Repeats are interleaved path by path so a noisy machine slows every path alike, and each short call is
timed right after an untimed call of the same path (see :func:`_measure`); ratios are of medians from
the same run.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
from torch import nn

import rnnlab
from rnnlab import kernels
from rnnlab.runs import new_run_dir, print_table, write_metrics

GRID = [(32, 100, 64, 128), (64, 100, 128, 256), (16, 500, 32, 64), (1, 1000, 32, 128), (128, 50, 256, 512)]
MIN_GRID = [(16, 1000, 32, 128)]  # extra point for the minGRU / minLSTM vs LSTM comparison (with (1, 1000, 32, 128))
CELLS = ("rnn", "lstm", "gru", "ctrnn", "mingru", "minlstm")
MIN_CELLS = ("mingru", "minlstm")
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "ctrnn": 1, "mingru": 2, "minlstm": 3}
RECURRENT_MATMUL = {"rnn": True, "lstm": True, "gru": True, "ctrnn": True, "mingru": False, "minlstm": False}
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OURS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "ctrnn": rnnlab.CTRNN}
MINS = {"mingru": rnnlab.MinGRU, "minlstm": rnnlab.MinLSTM}
KERAS_LAYERS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def keras_module():
    """Keras 3 on its torch backend, or None (not installed, or already imported with another backend)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception:  # noqa: BLE001 - any import failure just drops the Keras column
        return None
    return keras if keras.backend.backend() == "torch" else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _layer_fns(layer, x):
    def fwd():
        with torch.no_grad():
            layer(x)

    def fwd_bwd():
        out = layer(x)[0]
        out.sum().backward()

    return fwd, fwd_bwd


def _keras_fns(keras, cell, x, hidden):
    layer = getattr(keras.layers, KERAS_LAYERS[cell])(hidden, return_sequences=True)
    layer.build(tuple(x.shape))

    def fwd():
        with torch.no_grad():
            layer(x)

    def fwd_bwd():
        layer(x).sum().backward()

    return fwd, fwd_bwd


def floor_fns(batch, steps, inputs, hidden, gates, recurrent=True, device="cpu"):
    """The matmuls alone: ``x @ W_ih^T`` for all steps, ``h_t @ W_hh^T`` per step; backward ``dx``, ``dW_ih``,
    ``dh_t @ W_hh`` per step and ``dW_hh`` over all steps. Inputs are prepared (unbound, transposed) outside."""
    g = gates * hidden
    x = torch.randn(batch * steps, inputs, device=device)
    w_ih_t = torch.randn(g, inputs, device=device).t()
    w_ih = w_ih_t.t()
    w_hh_t = torch.randn(g, hidden, device=device).t()
    w_hh = w_hh_t.t()
    hs = torch.randn(steps, batch, hidden, device=device)
    h_steps = hs.unbind(0)
    g_proj = torch.randn(batch * steps, g, device=device)
    g_steps_all = torch.randn(steps, batch, g, device=device)
    g_steps = g_steps_all.unbind(0)

    def fwd():
        torch.mm(x, w_ih_t)
        if recurrent:
            for h_t in h_steps:
                torch.mm(h_t, w_hh_t)

    def fwd_bwd():
        fwd()
        torch.mm(g_proj.t(), x)  # dW_ih
        torch.mm(g_proj, w_ih)  # dx
        if recurrent:
            for g_t in g_steps:
                torch.mm(g_t, w_hh)  # dh_{t-1}, sequential
            torch.mm(g_steps_all.view(-1, g).t(), hs.view(-1, hidden))  # dW_hh, one GEMM

    return fwd, fwd_bwd


WARM_BELOW_S = 0.1  # calls shorter than this are timed right after an untimed call of the same fn


def _measure(fns: dict, repeats: int, device, budget_s: float = 4.0, min_s: float = 0.5) -> dict:
    """Median seconds of each fn over interleaved rounds (each round calls every fn still sampling).

    Every fn gets the same treatment. Each is warmed up once; a call shorter than ``WARM_BELOW_S``
    is timed right after an untimed call of the same fn, so it starts from its own allocator and
    cache state, as in a training loop, and not from what the fn before it left (a slow Python
    reference path or Keras leaves a millisecond or two of page faults and cache misses, a visible
    share of a 10 ms call). Each fn is timed ``repeats`` times; short ones go on, up to 8x
    ``repeats``, until their timings add up to ``min_s`` (so the medians of 10-30 ms calls come from
    20-50 timings); a fn whose timings pass ``budget_s`` stops at 3.
    """
    last = {}
    for k, fn in fns.items():  # warm-up (allocations, oneDNN primitive caches, keras build)
        start = time.perf_counter()
        fn()
        _sync(device)
        last[k] = time.perf_counter() - start
    times = {k: [] for k in fns}

    def wanted(ts: list) -> bool:
        if len(ts) >= 3 and sum(ts) > budget_s:
            return False
        return len(ts) < repeats or (sum(ts) < min_s and len(ts) < 8 * repeats)

    while todo := [k for k in fns if wanted(times[k])]:
        for k in todo:
            if last[k] < WARM_BELOW_S:
                fns[k]()
            _sync(device)
            start = time.perf_counter()
            fns[k]()
            _sync(device)
            last[k] = time.perf_counter() - start
            times[k].append(last[k])
    return {k: statistics.median(v) for k, v in times.items()}


def _paths(cell, batch, steps, inputs, hidden, device, keras):
    """name -> layer (or (fwd, fwd_bwd) pair) for one grid point."""
    kw = {"device": device}
    paths = {}
    if cell in MINS:
        for mode in ("reference", "sequential", "scan", "auto"):
            paths["fused" if mode == "auto" else mode] = MINS[cell](inputs, hidden, mode=mode, **kw)
        paths["lstm_fused"] = rnnlab.LSTM(inputs, hidden, impl="fused", **kw)
        return paths
    if cell in TORCH:
        paths["torch"] = TORCH[cell](inputs, hidden, batch_first=True, **kw)
        if keras is not None and device.type == "cpu":
            paths["keras"] = "keras"
    for impl in ("reference", "fused"):
        paths[impl] = OURS[cell](inputs, hidden, impl=impl, **kw)
    return paths


def bench_point(cell: str, batch: int, steps: int, inputs: int, hidden: int, repeats: int,
                device: str | torch.device = "cpu", keras=None) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(batch, steps, inputs, device=device)
    row = {"cell": cell, "batch": batch, "steps": steps, "inputs": inputs, "hidden": hidden}
    fwd_fns, bwd_fns = {}, {}
    for name, layer in _paths(cell, batch, steps, inputs, hidden, device, keras).items():
        if layer == "keras":
            fwd_fns[name], bwd_fns[name] = _keras_fns(keras, cell, x, hidden)
        else:
            fwd_fns[name], bwd_fns[name] = _layer_fns(layer, x)
            if name == "fused" and cell in MINS:
                layer(x[:, :1])  # resolve auto for the real shape below
                row["mode"] = layer.choose_mode(x)
    fwd_fns["floor"], bwd_fns["floor"] = floor_fns(batch, steps, inputs, hidden, GATES[cell], RECURRENT_MATMUL[cell],
                                                   device)
    for name, t in _measure(fwd_fns, repeats, device).items():
        row[f"{name}_fwd_ms"] = 1e3 * t
    for name, t in _measure(bwd_fns, repeats, device).items():
        row[f"{name}_fwdbwd_ms"] = 1e3 * t
    fused = row["fused_fwdbwd_ms"]
    if cell in TORCH:
        row["fused_over_torch"] = fused / row["torch_fwdbwd_ms"]
        if "keras_fwdbwd_ms" in row:
            row["keras_over_torch"] = row["keras_fwdbwd_ms"] / row["torch_fwdbwd_ms"]
    if cell in MINS:
        row["lstm_over_fused"] = row["lstm_fused_fwdbwd_ms"] / fused
    else:
        row["fused_over_floor"] = fused / row["floor_fwdbwd_ms"]
    row["reference_over_fused"] = row["reference_fwdbwd_ms"] / fused
    return row


def run(grid=GRID, cells=CELLS, repeats: int = 5, device="cpu", use_keras: bool = True,
        min_grid=MIN_GRID, progress=None) -> list[dict]:
    keras = keras_module() if use_keras and any(c in KERAS_LAYERS for c in cells) else None
    jobs = [(cell, point) for point in grid for cell in cells]
    jobs += [(cell, point) for point in min_grid if point not in grid for cell in cells if cell in MINS]
    rows = []
    for cell, point in jobs:
        rows.append(bench_point(cell, *point, repeats, device, keras))
        if progress:
            progress(rows[-1])
    return rows


COLUMNS = ["cell", "batch", "steps", "inputs", "hidden", "torch_fwdbwd_ms", "keras_fwdbwd_ms", "reference_fwdbwd_ms",
           "fused_fwdbwd_ms", "floor_fwdbwd_ms", "fused_over_torch", "fused_over_floor"]
MIN_COLUMNS = ["cell", "batch", "steps", "inputs", "hidden", "mode", "reference_fwdbwd_ms", "sequential_fwdbwd_ms",
               "scan_fwdbwd_ms", "fused_fwdbwd_ms", "lstm_fused_fwdbwd_ms", "lstm_over_fused"]
FWD_COLUMNS = ["cell", "batch", "steps", "inputs", "hidden", "torch_fwd_ms", "keras_fwd_ms", "reference_fwd_ms",
               "fused_fwd_ms", "floor_fwd_ms"]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time every cell (reference, fused) vs torch.nn, Keras and the GEMM floor",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", nargs="*", default=None, metavar="B,T,I,H", help="grid points (default: the standard five)")
    p.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--repeats", type=int, default=7,
                   help="timings per path at least (short calls get more, until 0.5 s of them)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuDNN is then the torch peer)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras column")
    p.add_argument("--quick", action="store_true", help="one small grid point, 3 repeats")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the rows as JSON (they are always in metrics.json)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    grid = [tuple(int(v) for v in g.split(",")) for g in args.grid] if args.grid else GRID
    min_grid = MIN_GRID if not args.grid else []
    if args.quick:
        grid, min_grid, args.repeats = [(32, 100, 64, 128)], [], 3
    header = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device,
              "cpp_kernels": kernels.AVAILABLE}
    progress = None if args.json else (lambda r: print(f"  {r['cell']} {r['batch']}x{r['steps']} done", flush=True))
    rows = run(grid, tuple(args.cells), args.repeats, args.device, not args.no_keras, min_grid, progress)
    run_dir = new_run_dir("bench", args.run_dir)
    write_metrics(run_dir, {**header, "rows": rows})
    if args.json:
        print(json.dumps({**header, "rows": rows}))
        return 0
    print(f"fwd+bwd medians in ms, {header['threads']} threads, torch {torch.__version__}, {args.device}, "
          f"C++ kernels {'built' if kernels.AVAILABLE else 'not built'}")
    std = [r for r in rows if r["cell"] not in MINS]
    if std:
        print_table(std, [c for c in COLUMNS if any(c in r for r in std)], floatfmt=".3g")
        print("forward only (no_grad), ms")
        print_table(std, [c for c in FWD_COLUMNS if any(c in r for r in std)], floatfmt=".3g")
    mins = [r for r in rows if r["cell"] in MINS]
    if mins:
        print("minGRU / minLSTM vs rnnlab LSTM (fused), fwd+bwd ms")
        print_table(mins, MIN_COLUMNS, floatfmt=".3g")
    print(f"rows written to {run_dir}/metrics.json")
    return 0
