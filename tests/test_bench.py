"""rnnlab bench produces a row per cell and grid point with every path timed (no speed assertions:
speed is a benchmark figure, not a test)."""
from rnnlab.tasks import bench


def test_bench_rows_have_every_path():
    rows = bench.run(grid=[(2, 5, 3, 4)], repeats=1)
    assert [r["cell"] for r in rows] == ["rnn", "lstm", "gru", "ctrnn"]
    for r in rows:
        for path in ("reference", "fused", "floor"):
            assert r[f"{path}_fwd_ms"] > 0 and r[f"{path}_fwdbwd_ms"] > 0
        assert (r["torch_fwdbwd_ms"] > 0) if r["cell"] != "ctrnn" else ("torch_fwdbwd_ms" not in r)
