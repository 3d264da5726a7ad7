"""Run folders -> report.html, rendered in headless Chromium."""
import json

import pytest

from rnnlab.browser import check_page, chromium
from rnnlab.errors import RnnlabError
from rnnlab.report import build_report
from rnnlab.runs import write_config, write_metrics
from rnnlab.tasks import toy


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = toy.Config(cell="gru", samples=128, epochs=2)
    metrics = toy.run(config, run_dir=root / "gru")
    write_config(root / "gru", config)
    write_metrics(root / "gru", metrics)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    fig.savefig(root / "gru" / "plot.png")
    return root


def test_report_holds_metrics_curves_plots_and_command(run_folder):
    page = build_report([run_folder], run_folder / "report.html").read_text()
    assert "val_loss" in page and "training curves (log.csv)" in page
    assert page.count("data:image/png;base64,") == 2  # the curve + plot.png
    assert "torch 2.13" in page and "Command:" in page
    assert json.loads((run_folder / "gru" / "metrics.json").read_text())["cell"] == "gru"


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(RnnlabError, match="no run folders"):
        build_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(RnnlabError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")


@pytest.mark.skipif(chromium() is None, reason="Debian chromium not installed (make install adds it as root)")
def test_report_renders_in_headless_chromium(run_folder):
    page = build_report([run_folder], run_folder / "report.html")
    result = check_page(page, run_folder / "report-screenshot.png")
    assert result["loaded"] and result["images"] == "2/2", result
    assert result["console_errors"] == []
    assert (run_folder / "report-screenshot.png").stat().st_size > 10_000
