"""rnnlab bench produces a row per cell and grid point with every path timed (no speed assertions:
speed is a benchmark figure, not a test), and its floor does the matmuls it claims."""
import pytest
import torch

from rnnlab.tasks import bench


def test_bench_rows_have_every_path():
    rows = bench.run(grid=[(2, 5, 3, 4)], repeats=1, use_keras=False, min_grid=[])
    assert [r["cell"] for r in rows] == list(bench.CELLS)
    for r in rows:
        paths = ("reference", "fused", "floor") + (("sequential", "scan", "lstm_fused") if r["cell"] in bench.MINS else ())
        for path in paths:
            assert r[f"{path}_fwd_ms"] > 0 and r[f"{path}_fwdbwd_ms"] > 0
        assert (r["torch_fwdbwd_ms"] > 0) if r["cell"] in bench.TORCH else ("torch_fwdbwd_ms" not in r)
        if r["cell"] in bench.MINS:
            assert r["mode"] in ("sequential", "scan", "reference") and r["lstm_over_fused"] > 0
        else:
            assert r["fused_over_floor"] == pytest.approx(r["fused_fwdbwd_ms"] / r["floor_fwdbwd_ms"])


def test_floor_runs_one_recurrent_matmul_per_step(monkeypatch):
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: calls.append(1) or real_mm(a, b))
    fwd, fwd_bwd = bench.floor_fns(2, 7, 3, 4, gates=3)
    fwd()
    assert len(calls) == 1 + 7  # input projection + one per step
    calls.clear()
    fwd_bwd()
    assert len(calls) == (1 + 7) + 2 + 7 + 1  # forward, dW_ih and dx, dh per step, dW_hh
