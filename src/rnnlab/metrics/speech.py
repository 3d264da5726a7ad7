"""Speech recognition figures: word accuracy, confusion matrix, word error rate (one function each)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rnnlab.errors import RnnlabError


def accuracy(predicted: Sequence, expected: Sequence) -> float:
    """Fraction of isolated words recognised correctly."""
    if len(predicted) != len(expected):
        raise RnnlabError(f"expected one prediction per reference, got {len(predicted)} for {len(expected)}")
    if not len(expected):
        raise RnnlabError("cannot score an empty test set")
    return float(np.mean([p == e for p, e in zip(predicted, expected)]))


def confusion_matrix(predicted: Sequence[int], expected: Sequence[int], n_classes: int) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for p, e in zip(predicted, expected):
        m[int(e), int(p)] += 1
    return m


def edit_distance(hypothesis: Sequence, reference: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two token sequences."""
    prev = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, 1):
        cur = [i] + [0] * len(reference)
        for j, r in enumerate(reference, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (h != r))
        prev = cur
    return prev[-1]


def word_error_rate(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Corpus WER: total edit distance over total reference words."""
    if len(hypotheses) != len(references):
        raise RnnlabError(f"expected one hypothesis per reference, got {len(hypotheses)} for {len(references)}")
    words = sum(len(r) for r in references)
    if words == 0:
        raise RnnlabError("cannot score word error rate against empty references")
    return sum(edit_distance(h, r) for h, r in zip(hypotheses, references)) / words
