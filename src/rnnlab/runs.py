"""Run folders: where every command writes its config, metrics, logs and plots.

A run folder is the unit the report (``rnnlab report``) reads: ``config.json``, ``metrics.json``,
``log.csv`` and any ``*.png`` / ``*.gif`` written beside them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def is_main_process() -> bool:
    """False on the ranks > 0 of a torchrun launch: only rank 0 writes run folders and prints."""
    return int(os.environ.get("RANK", "0")) == 0


def new_run_dir(command: str, run_dir: str | os.PathLike | None = None) -> Path:
    """Return (and create) the run folder: ``run_dir`` if given, else ``runs/<command>/<timestamp>``."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / command.replace(" ", "-") / stamp
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    Temporary file in the same folder, fsync, then rename (atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (dataclasses, NumPy and torch scalars converted), atomically."""
    if not is_main_process():
        return
    text = json.dumps(_jsonable(obj), indent=2, ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def write_config(run_dir: Path, config: Any) -> None:
    """``config.json``: the task config plus the exact command line and versions."""
    import platform

    import torch

    payload = {
        "config": _jsonable(config),
        "command": " ".join(["rnnlab", *sys.argv[1:]]) if sys.argv else "",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    write_json(Path(run_dir) / "config.json", payload)


def write_metrics(run_dir: Path, metrics: dict) -> None:
    write_json(Path(run_dir) / "metrics.json", metrics)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG (dpi 110) and close it (only rank 0 writes under torchrun)."""
    import matplotlib.pyplot as plt

    if not is_main_process():
        plt.close(fig)
        return Path(path)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def print_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4g", file=None) -> None:
    """Print ``rows`` (dicts) as an aligned plain-text table."""
    if not rows:
        return
    columns = columns or list(rows[0].keys())

    def fmt(value):
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value)

    cells = [[fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    out = file or sys.stdout
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=out)
