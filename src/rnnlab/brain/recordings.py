"""Real monkey motor-cortex recordings (Dyer et al. 2017, Nature Biomedical Engineering 1, 967-976).

The demo files of the DAD code release: spike counts ``Y`` (bins x units), hand velocity ``X``
(bins x 2) and reach target ``T`` (bins) for a train and a test split. The loader takes the path of
a ``.mat`` file or of the folder that holds them; the files are never copied into the project.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.errors import RnnlabError

SUBJECT_FILES = {"C": "chewie_demo.mat", "M": "mihi_demo.mat"}


@dataclass
class Split:
    """One split: ``spikes (bins, units)``, ``velocity (bins, 2)``, ``target (bins,)``, ``segments``."""

    spikes: np.ndarray
    velocity: np.ndarray
    target: np.ndarray

    @property
    def segments(self) -> list[tuple[int, int]]:
        """``[start, stop)`` of each contiguous reach (a run of bins with one target)."""
        return reach_segments(self.target)


@dataclass
class Recording:
    subject: str
    path: Path
    train: Split
    test: Split


def reach_segments(target: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of one target label: the reaches, since bins of consecutive reaches abut."""
    target = np.asarray(target).ravel()
    if target.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(target) != 0) + 1
    edges = np.concatenate([[0], cuts, [target.size]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def resolve_path(path: str | Path, subject: str = "C") -> Path:
    """The ``.mat`` file of ``subject`` given either the file itself or its folder."""
    path = Path(path)
    if path.is_dir():
        if subject not in SUBJECT_FILES:
            raise RnnlabError(f"subject must be one of {sorted(SUBJECT_FILES)}, got {subject!r}")
        path = path / SUBJECT_FILES[subject]
    if not path.is_file():
        raise RnnlabError(f"motor-cortex recording: expected a .mat file (or its folder), got missing path {path}")
    return path


def _split(data: dict, suffix: str, path: Path) -> Split:
    keys = [f"Y{suffix}", f"X{suffix}", f"T{suffix}"]
    missing = [k for k in keys if k not in data]
    if missing:
        raise RnnlabError(f"{path}: expected keys {keys}, missing {missing}")
    spikes = np.asarray(data[keys[0]], dtype=np.float64)
    velocity = np.asarray(data[keys[1]], dtype=np.float64)
    target = np.asarray(data[keys[2]])
    if target.size and not (np.issubdtype(target.dtype, np.number) and np.isfinite(target).all()):
        raise RnnlabError(f"{path}: {keys[2]} must hold finite target numbers, found NaN, inf or non-numbers")
    target = target.astype(np.int64).ravel()
    if velocity.ndim != 2 or velocity.shape[1] != 2:
        raise RnnlabError(f"{path}: {keys[1]} must be (bins, 2) hand velocity, got shape {velocity.shape}")
    if not (spikes.shape[0] == velocity.shape[0] == target.shape[0]):
        raise RnnlabError(f"{path}: {keys} must have the same number of bins, got "
                          f"{spikes.shape[0]}, {velocity.shape[0]}, {target.shape[0]}")
    if not (np.isfinite(spikes).all() and np.isfinite(velocity).all()):
        raise RnnlabError(f"{path}: {keys[:2]} must be finite, found NaN or inf")
    return Split(spikes, velocity, target)


def load_recording(path: str | Path, subject: str = "C") -> Recording:
    """Load one subject's recording from ``path`` (a ``.mat`` file or the folder holding it)."""
    import scipy.io

    path = resolve_path(path, subject)
    try:
        data = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise RnnlabError(f"{path}: expected a MATLAB v5 .mat file, could not read it ({exc})") from exc
    name = next((s for s, f in SUBJECT_FILES.items() if f == path.name), subject)
    return Recording(name, path, _split(data, "tr", path), _split(data, "te", path))


def default_data_dir() -> Path:
    """``../shared/data/motor-cortex`` relative to the repository (where tests and demo find it)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "motor-cortex"
        if candidate.is_dir():
            return candidate
    return Path("../shared/data/motor-cortex")
