"""Language-model metrics from a total negative log-likelihood: one function, used by the n-gram
baseline, the character LSTM and the report alike, so every number is computed the same way."""
from __future__ import annotations

import math

from rnnlab.errors import RnnlabError


def text_metrics(total_nats: float, n_chars: int) -> dict[str, float]:
    """Per-character cross-entropy in three units from ``total_nats = -sum_t ln p(x_t | x_<t)``.

    ``nats_per_char = total_nats / n_chars``, ``bpc = nats_per_char / ln 2`` and
    ``perplexity = exp(nats_per_char)`` (the size of a uniform alphabet that would be as hard:
    uniform over 4 symbols gives 2 bpc and perplexity 4).
    """
    if isinstance(n_chars, bool) or int(n_chars) != n_chars or n_chars < 1:
        raise RnnlabError(f"text_metrics expects n_chars a positive integer, got {n_chars!r}")
    total = float(total_nats)
    if not math.isfinite(total) or total < 0:
        raise RnnlabError(f"text_metrics expects total_nats finite and >= 0 (a negative log-likelihood), "
                          f"got {total_nats!r}")
    nats = total / int(n_chars)
    return {"nats_per_char": nats, "bpc": nats / math.log(2), "perplexity": math.exp(nats)}
