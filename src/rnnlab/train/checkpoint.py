"""Checkpoints: one safetensors file, no pickle anywhere.

Tensors (model weights, optimizer moments, RNG states) are safetensors tensors; everything else
(epoch, optimizer hyper-parameters, scheduler state, history, config) is JSON in the file's
metadata. Files are written atomically (temporary file, fsync, rename), so a crash leaves the
previous checkpoint intact. Loading a truncated, tampered or foreign file raises
:class:`CheckpointError` naming the file and the problem.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnlab.errors import RnnlabError
from rnnlab.runs import atomic_write_bytes

FORMAT = "rnnlab-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RnnlabError):
    """A checkpoint or model file that cannot be used (missing, truncated, tampered, incompatible)."""


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested structure into ``tensors``; return JSON with references."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors), _split(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, np.ndarray):
        return _split(torch.from_numpy(obj.copy()), prefix, tensors)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a value of type {type(obj).__name__} in a checkpoint (at {prefix})")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_join(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
    return obj


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1].numpy() if isinstance(n[1], torch.Tensor) else n[1], dtype=np.uint32),
                         int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(int(v) for v in p[1]), p[2]))


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (nested dicts/lists of tensors, numbers, strings) to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(payload, "t", tensors)
    metadata = {"format": FORMAT, "version": str(FORMAT_VERSION), "tree": json.dumps(tree)}
    data = st_save(tensors, metadata=metadata)
    atomic_write_bytes(path, data)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file (header says {header_len} bytes, file has {len(data)})")
    try:
        header = json.loads(data[8:8 + header_len])
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError types
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {exc}") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != str(FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')}, this rnnlab reads version {FORMAT_VERSION}")
    try:
        tree = json.loads(meta["tree"])
        return _join(tree, tensors)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has damaged metadata: {exc}") from None


def load_model_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike = "<memory>") -> None:
    """Load ``state`` into ``model``, naming missing/unexpected/mis-shaped weights on mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {wrong[:5]}"
        )
    model.load_state_dict(state)
