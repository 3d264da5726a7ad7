"""``rnnlab bench``: time every cell's paths against torch.nn and against the GEMM floor, in one process.

For each (batch, steps, inputs, hidden) of the grid and each cell (RNN, LSTM, GRU, CTRNN) it times,
forward and forward+backward, median of repeats:

* ``torch.nn``: ``torch.nn.RNN / LSTM / GRU`` (batch-first), the peer;
* ``reference``: rnnlab's cell equations step by step (``impl="reference"``);
* ``fused``: rnnlab's fastest path (``impl="fused"``);
* ``floor``: only the matrix multiplies a recurrent layer cannot avoid — one input projection for
  all steps plus one recurrent matmul per step (and, backward, the matching gradient matmuls).

Ratios are of medians measured in the same run, so they compare like with like on this machine.
"""
from __future__ import annotations

import json
import statistics
import time

import torch
from torch import nn

import rnnlab
from rnnlab.runs import new_run_dir, print_table, write_metrics

GRID = [(32, 100, 64, 128), (64, 100, 128, 256), (16, 500, 32, 64), (1, 1000, 32, 128), (128, 50, 256, 512)]
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "ctrnn": 1}
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OURS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "ctrnn": rnnlab.CTRNN}


def _time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _layer_fns(layer, x):
    def fwd():
        with torch.no_grad():
            layer(x)

    def fwd_bwd():
        out = layer(x)[0]
        out.sum().backward()

    return fwd, fwd_bwd


def _floor_fns(batch, steps, inputs, hidden, gates):
    x = torch.randn(batch * steps, inputs)
    w_ih = torch.randn(gates * hidden, inputs, requires_grad=True)
    w_hh = torch.randn(gates * hidden, hidden, requires_grad=True)
    hs = torch.randn(steps, batch, hidden)

    def fwd():
        with torch.no_grad():
            x @ w_ih.T
            for t in range(steps):
                hs[t] @ w_hh.T

    g_proj = torch.randn(batch * steps, gates * hidden)
    g_steps = torch.randn(steps, batch, gates * hidden)

    def fwd_bwd():
        fwd()
        with torch.no_grad():
            g_proj.T @ x  # dW_ih
            g_proj @ w_ih  # dx
            for t in range(steps):
                g_steps[t] @ w_hh  # dh_{t-1}, sequential
            g_steps.reshape(-1, gates * hidden).T @ hs.reshape(-1, hidden)  # dW_hh as one GEMM

    return fwd, fwd_bwd


def bench_point(cell: str, batch: int, steps: int, inputs: int, hidden: int, repeats: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, steps, inputs)
    row = {"cell": cell, "batch": batch, "steps": steps, "inputs": inputs, "hidden": hidden}
    paths = {}
    if cell in TORCH:
        paths["torch"] = TORCH[cell](inputs, hidden, batch_first=True)
    for impl in ("reference", "fused"):
        paths[impl] = OURS[cell](inputs, hidden, impl=impl)
    for name, layer in paths.items():
        fwd, fwd_bwd = _layer_fns(layer, x)
        row[f"{name}_fwd_ms"] = 1e3 * _time(fwd, repeats)
        row[f"{name}_fwdbwd_ms"] = 1e3 * _time(fwd_bwd, repeats)
    fwd, fwd_bwd = _floor_fns(batch, steps, inputs, hidden, GATES[cell])
    row["floor_fwd_ms"] = 1e3 * _time(fwd, repeats)
    row["floor_fwdbwd_ms"] = 1e3 * _time(fwd_bwd, repeats)
    base = row["fused_fwdbwd_ms"]
    row["fused_over_torch"] = base / row["torch_fwdbwd_ms"] if cell in TORCH else None
    row["fused_over_floor"] = base / row["floor_fwdbwd_ms"]
    row["reference_over_fused"] = row["reference_fwdbwd_ms"] / base
    return row


def run(grid=GRID, cells=tuple(GATES), repeats: int = 5) -> list[dict]:
    return [bench_point(cell, *point, repeats) for point in grid for cell in cells]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time every cell (reference, fused) vs torch.nn and the GEMM floor",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", nargs="*", default=None, metavar="B,T,I,H", help="grid points (default: the standard five)")
    p.add_argument("--cells", nargs="*", default=list(GATES), choices=list(GATES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one small grid point, 3 repeats")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    grid = [tuple(int(v) for v in g.split(",")) for g in args.grid] if args.grid else GRID
    if args.quick:
        grid, args.repeats = [(32, 100, 64, 128)], 3
    rows = run(grid, tuple(args.cells), args.repeats)
    run_dir = new_run_dir("bench", args.run_dir)
    write_metrics(run_dir, {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows})
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}))
        return 0
    print(f"fwd+bwd medians in ms, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print_table(rows, ["cell", "batch", "steps", "inputs", "hidden", "torch_fwdbwd_ms", "reference_fwdbwd_ms",
                       "fused_fwdbwd_ms", "floor_fwdbwd_ms", "fused_over_torch", "fused_over_floor"], floatfmt=".3g")
    return 0
