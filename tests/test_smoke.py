"""``--dry-run`` smoke test of every application command, for every cell type it offers.

Each run goes through the real path (data from the installed packages -> model -> fit -> evaluate
-> run folder) at a tiny size, through the CLI, and must leave config.json and metrics.json.
"""
import importlib
import json
import re
import shutil
import subprocess
import sys

import pytest

# (module, argv before the flags, the flag that picks the cell, extra flags)
APPLICATIONS = [
    ("toy", ["toy"], "--cell", []),
    ("forecast", ["forecast", "--dataset", "airpassengers"], "--model", []),
    ("generate", ["generate", "train"], "--cell", []),
    ("translate", ["translate", "train", "--pair", "en-fr"], "--cell", []),
    ("speech", ["speech", "train"], "--cell", []),
    ("motor", ["motor", "train"], None, []),
]
CELLS = ["rnn", "lstm", "gru"]


def _available(module: str) -> bool:
    try:
        importlib.import_module(f"rnnlab.tasks.{module}")
    except ModuleNotFoundError:
        return False
    return True


def _cell_choices(argv, flag):
    """The values the command's cell flag accepts, read from its --help."""
    if flag is None:
        return [None]
    help_text = subprocess.run([sys.executable, "-m", "rnnlab", *argv[:2], "--help"], capture_output=True,
                               text=True).stdout
    match = re.search(re.escape(flag) + r" \{([^}]*)\}", help_text)
    if not match:
        return [None] if flag not in help_text else CELLS
    offered = match.group(1).split(",")
    return [c for c in offered if c in CELLS + ["ctrnn", "mingru", "minlstm"]] or [None]


CASES = [
    pytest.param(module, argv, flag, extra, id=module)
    for module, argv, flag, extra in APPLICATIONS
] + [pytest.param("speech", ["speech", "train"], None, ["--front", "mfcc", "--ensemble", "2"],
                  id="speech-mfcc-ensemble")]  # the log-mel path, and two word classifiers on their own voices


@pytest.mark.parametrize("module,argv,flag,extra", CASES)
def test_dry_run_every_cell(module, argv, flag, extra, tmp_path):
    if not _available(module):
        pytest.skip(f"rnnlab.tasks.{module} is not part of this build")
    if module == "speech" and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing (make install adds it as root)")
    if len(argv) > 1 and not argv[1].startswith("-"):
        help_text = subprocess.run([sys.executable, "-m", "rnnlab", argv[0], "--help"], capture_output=True, text=True).stdout
        if argv[1] not in help_text:
            pytest.skip(f"rnnlab {argv[0]} {argv[1]} is not part of this build")
    for cell in _cell_choices(argv, flag):
        run_dir = tmp_path / (cell or "default")
        cmd = [sys.executable, "-m", "rnnlab", *argv, *extra, "--dry-run", "--json", "--run-dir", str(run_dir)]
        if cell is not None:
            cmd += [flag, cell]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-3000:]}"
        json.loads(done.stdout.strip().splitlines()[-1])  # --json prints the figures as one JSON object
        assert (run_dir / "metrics.json").is_file() and (run_dir / "config.json").is_file(), cmd
