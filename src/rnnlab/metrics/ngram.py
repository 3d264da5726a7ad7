"""Interpolated Kneser-Ney character n-gram language model: the baseline a character LSTM must beat.

Chen & Goodman (1998), "An empirical study of smoothing techniques for language modeling", with one
absolute discount ``D_n`` per order ``n = 1..N``. For a history ``h`` of ``n - 1`` characters, its
shorter history ``h'`` (``h`` without its first character) and the next character ``w``:

    P_n(w | h) = max(c_n(hw) - D_n, 0) / S_n(h)  +  D_n * T_n(h) / S_n(h) * P_{n-1}(w | h')

    S_n(h) = sum_w c_n(hw)                (the history's total count at this level)
    T_n(h) = #{w : c_n(hw) > 0}           (how many different characters followed it)
    P_0(w) = 1 / V                        (uniform over the whole vocabulary, ``<unk>`` included)

The counts ``c_n`` differ by level. The highest order ``N`` uses raw counts, ``c_N(g) = count(g)``.
Every lower order uses *continuation* counts, ``c_n(g) = #{v : count(v g) > 0}``, the number of
distinct characters seen just before ``g``: a lower order is only consulted when the longer
history says little, so it should model how readily ``w`` follows a *new* history, not how often
``w`` occurs (the classic example: "Francisco" is frequent but nearly always after "San").

A history never seen at level ``n`` (``S_n(h) = 0``) backs off fully: ``P_n(w | h) = P_{n-1}(w | h')``.
Each level is then a proper distribution, because ``sum_w max(c - D, 0) = S - D * T`` when every
nonzero count is at least 1 and ``0 < D < 1``.

The first ``N - 1`` positions of a scored sequence have fewer than ``N - 1`` characters before
them. No begin symbol is padded in: position ``t`` uses the ``t`` characters it has, which is the
recursion above with the missing longer histories treated as unseen (it starts at level ``t + 1``
with that level's counts). Likewise the training text is one stream: an n-gram at its very start
has no left neighbour and so no continuation count from that occurrence.

Efficiency: an n-gram ``(x_1..x_n)`` is the integer ``sum_i x_i * V**(n - i)`` (first character
most significant), so its history is ``key // V`` and its last ``m`` characters are
``key % V**m``. Counting is ``np.unique`` on those keys and lookup is ``np.searchsorted``: no Python
loop runs over the characters. Fitting order 7 on 4.1M characters takes seconds and well under
1 GB.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from rnnlab.errors import RnnlabError
from rnnlab.metrics.text import text_metrics

_KEY_LIMIT = 2 ** 63 - 1
_D_BOUNDS = (0.01, 0.99)


class _Level:
    """One order's tables: the n-grams with nonzero count (sorted keys), their counts, and per
    history ``S_n(h)`` and ``T_n(h)`` (sorted history keys)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys, self.counts, self.v = keys, counts.astype(np.float64), vocab_size
        hist = keys // vocab_size                      # sorted, because keys are sorted
        starts = np.flatnonzero(np.r_[True, hist[1:] != hist[:-1]]) if len(hist) else np.zeros(0, np.int64)
        self.hist = hist[starts]
        self.total = np.add.reduceat(self.counts, starts) if len(starts) else np.zeros(0)
        self.types = np.diff(np.r_[starts, len(keys)]).astype(np.float64)

    def ney_discount(self) -> float:
        """Ney's estimate ``D = n1 / (n1 + 2 n2)`` from how many n-grams have count 1 and 2;
        a good start, and the value used when :meth:`KneserNey.tune` is not called."""
        n1, n2 = np.sum(self.counts == 1), np.sum(self.counts == 2)
        d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
        return float(np.clip(d, 0.05, 0.95))

    def stats(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``c_n(q)``, ``S_n(q // V)`` and ``T_n(q // V)`` for n-gram keys ``query`` (0 where absent;
        a key of -1 marks "no such n-gram here" and is never found)."""
        hist = query // self.v                          # -1 // V == -1: still never found
        return _find(self.keys, self.counts, query), _find(self.hist, self.total, hist), \
            _find(self.hist, self.types, hist)


def _find(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``sorted_keys[i] == query``, else 0."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query))
    i = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return np.where(sorted_keys[i] == query, values[i], 0.0)


class KneserNey:
    """Interpolated Kneser-Ney character model of order ``order`` over ids ``0..vocab_size-1``
    (equations in the module docstring). ``fit`` counts, ``tune`` picks the discounts on validation
    text, ``log_probs`` scores."""

    def __init__(self, order: int, vocab_size: int, discounts: list[float] | None = None):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise RnnlabError(f"KneserNey expects order an integer >= 1, got {order!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise RnnlabError(f"KneserNey expects vocab_size an integer >= 1, got {vocab_size!r}")
        if int(vocab_size) ** int(order) > _KEY_LIMIT:
            raise RnnlabError(f"KneserNey packs each n-gram into an int64, so vocab_size**order must be "
                              f"< 2**63; got {vocab_size}**{order}")
        self.order, self.vocab_size = int(order), int(vocab_size)
        self.discounts = None if discounts is None else self._check_discounts(discounts)
        self._levels: list[_Level] | None = None

    # -- input checks ------------------------------------------------------------------------------
    def _check_discounts(self, discounts) -> list[float]:
        d = [float(x) for x in discounts]
        if len(d) != self.order or not all(0.0 < x < 1.0 for x in d):
            raise RnnlabError(f"KneserNey expects {self.order} discounts, each in (0, 1) so every level "
                              f"stays a proper distribution; got {list(discounts)!r}")
        return d

    def _check_ids(self, ids, what: str) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise RnnlabError(f"KneserNey.{what} expects a non-empty 1-D array of integer ids, got "
                              f"shape {a.shape} dtype {a.dtype}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= self.vocab_size:
            raise RnnlabError(f"KneserNey.{what} expects ids in [0, {self.vocab_size}), got values from "
                              f"{lo} to {hi}")
        return a.astype(np.int64, copy=False)

    def _fitted(self) -> list[_Level]:
        if self._levels is None:
            raise RnnlabError("KneserNey has no counts yet: call fit(train_ids) first")
        return self._levels

    # -- counting ----------------------------------------------------------------------------------
    def fit(self, ids: np.ndarray) -> "KneserNey":
        """Count every n-gram of the training ids (one stream) and build the ``N`` levels.

        Level ``N`` counts raw occurrences. Level ``n < N`` counts distinct left extensions: with
        ``G_{n+1}`` the set of distinct (n+1)-grams in the text, ``c_n(g)`` is how many of them end
        with ``g``, i.e. ``np.unique(G_{n+1} % V**n, return_counts=True)``.
        """
        ids = self._check_ids(ids, "fit")
        n_top, v, length = self.order, self.vocab_size, len(ids)
        keys = _ngram_keys(ids, n_top, v)              # every N-gram, by position
        top_keys, top_counts = np.unique(keys, return_counts=True)
        del keys
        levels: list[_Level] = [None] * n_top          # type: ignore[list-item]
        levels[n_top - 1] = _Level(top_keys, top_counts, v)
        distinct = top_keys                            # G_{n+1}: the distinct (n+1)-grams in the text
        for n in range(n_top - 1, 0, -1):
            suffix, n_left = np.unique(distinct % v ** n, return_counts=True)
            levels[n - 1] = _Level(suffix, n_left, v)
            # G_n = suffixes of G_{n+1}, plus the text's first n-gram: it has no left neighbour, so
            # no (n+1)-gram ends with it, yet it is in the text.
            distinct = suffix if length < n else np.union1d(suffix, _ngram_keys(ids[:n], n, v))
        self._levels = levels
        if self.discounts is None:
            self.discounts = [lev.ney_discount() for lev in levels]
        return self

    # -- scoring -----------------------------------------------------------------------------------
    def _stats(self, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per level ``(c_n, S_n, T_n)`` at every position of ``ids``. They do not depend on the
        discounts, so :meth:`tune` computes them once and only redoes the cheap arithmetic."""
        levels, v, length = self._fitted(), self.vocab_size, len(ids)
        out = []
        key = ids.copy()                                # key of the n-gram ending at t, for t >= n - 1
        for n in range(1, self.order + 1):
            if n > 1:
                key = ids[: length - n + 1] * v ** (n - 1) + key[1:]
            query = np.full(length, -1, dtype=np.int64)  # -1: not enough history, never found
            query[n - 1:] = key
            out.append(levels[n - 1].stats(query))
        return out

    def _interpolate(self, stats, discounts, start: int = 0, p: np.ndarray | None = None) -> np.ndarray:
        """Run the recursion from level ``start + 1`` up, from ``p`` = P_start (uniform if None)."""
        if p is None:
            p = np.full(len(stats[0][0]), 1.0 / self.vocab_size)
        for (c, s, t), d in zip(stats[start:], discounts[start:]):
            seen = s > 0
            # Unseen history: keep P_{n-1} (full back-off); dividing by 1 there only avoids 0/0.
            p = np.where(seen, (np.maximum(c - d, 0.0) + d * t * p) / np.where(seen, s, 1.0), p)
        return p

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """Natural-log ``P(ids[t] | ids[t-N+1 .. t-1])`` for every ``t``; the first ``N - 1``
        positions use the shorter history they have (see the module docstring)."""
        ids = self._check_ids(ids, "log_probs")
        return np.log(self._interpolate(self._stats(ids), self.discounts))

    def next_probs(self, context) -> np.ndarray:
        """``P(w | context)`` for every ``w`` in the vocabulary, from the last ``N - 1`` ids of
        ``context`` (fewer, or none, use the shorter history as at the start of a sequence)."""
        ctx = np.asarray(context, dtype=np.int64).ravel()
        if ctx.size:
            ctx = self._check_ids(ctx, "next_probs")
        ctx = ctx[len(ctx) - min(len(ctx), self.order - 1):]
        levels, v = self._fitted(), self.vocab_size
        stats, key = [], np.arange(v, dtype=np.int64)  # the V candidate n-grams "ctx[-(n-1):] w"
        for n in range(1, self.order + 1):
            if n > 1 and n - 1 <= len(ctx):
                key = key + int(ctx[len(ctx) - (n - 1)]) * v ** (n - 1)
            query = key if n - 1 <= len(ctx) else np.full(v, -1, dtype=np.int64)
            stats.append(levels[n - 1].stats(query))
        return self._interpolate(stats, self.discounts)

    def score(self, ids: np.ndarray) -> dict[str, float]:
        """:func:`rnnlab.metrics.text.text_metrics` of ``ids``: nats per char, bpc, perplexity."""
        lp = self.log_probs(ids)
        return text_metrics(float(-lp.sum()), len(lp))

    # -- discounts ---------------------------------------------------------------------------------
    def tune(self, val_ids: np.ndarray, sweeps: int = 4, tol: float = 1e-6) -> "KneserNey":
        """Choose ``D_1..D_N`` in (0, 1) that minimise the validation cross-entropy
        ``-mean_t ln P(val[t] | history)``.

        Coordinate descent, one bounded Brent search per order, lowest order first, repeated until
        a sweep improves by less than ``tol`` nats. The counts at validation positions are looked
        up once; changing ``D_n`` only reruns levels ``n..N`` (``P_{n-1}`` is cached), so each
        evaluation is a few vectorised passes.
        """
        val_ids = self._check_ids(val_ids, "tune")
        stats = self._stats(val_ids)
        d = list(self.discounts)
        best = float(-np.mean(np.log(self._interpolate(stats, d))))
        for _ in range(sweeps):
            before = best
            for n in range(self.order):
                below = self._interpolate(stats[:n], d[:n]) if n else None

                def loss(x, n=n, below=below):
                    trial = d[:n] + [x] + d[n + 1:]
                    return float(-np.mean(np.log(self._interpolate(stats, trial, start=n, p=below))))

                r = minimize_scalar(loss, bounds=_D_BOUNDS, method="bounded", options={"xatol": 1e-4})
                if r.fun < best:
                    d[n], best = float(r.x), float(r.fun)
            if before - best < tol:
                break
        self.discounts = d
        return self


def _ngram_keys(ids: np.ndarray, n: int, v: int) -> np.ndarray:
    """Integer key of every n-gram of ``ids`` (positions ``n-1 ..``), first character most significant."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    key = ids[:m].copy()
    for j in range(1, n):                               # n passes over the array, not a loop per character
        key = key * v + ids[j: j + m]
    return key


def cache_probs(ids: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """``P_cache(ids[t] | ids[:t])``: an n-gram model of the text read so far (a cache, Kuhn & De Mori 1990).

    Interpolated Witten-Bell over orders ``1..order``, built only from ``ids[:t]`` when ``ids[t]`` is
    predicted and updated after it: ``P_n(w | h) = (c(hw) + T(h) P_{n-1}(w | h')) / (c(h) + T(h))``
    with ``T(h)`` the number of distinct characters seen after ``h``, from ``P_0 = 1 / V``. Mixed with
    the Kneser-Ney model it is the adaptive n-gram that dynamic evaluation of the network is fairly
    compared with: both learn the names and phrases of the held-out text as they read it.
    """
    ids = np.asarray(ids, dtype=np.int64)
    v = int(vocab_size)
    keys = [_ngram_keys(ids, n, v).tolist() for n in range(1, order + 1)]  # keys[n-1][t-n+1]: n-gram ending at t
    grams = [dict() for _ in range(order)]
    hists = [dict() for _ in range(order)]   # history -> [count, distinct followers]
    out = np.empty(len(ids))
    for t in range(len(ids)):
        p = 1.0 / v
        top = min(order, t + 1)
        for n in range(1, top + 1):
            g = keys[n - 1][t - n + 1]
            h = hists[n - 1].get(g // v)
            if h is not None:
                p = (grams[n - 1].get(g, 0) + h[1] * p) / (h[0] + h[1])
        out[t] = p
        for n in range(1, top + 1):
            g = keys[n - 1][t - n + 1]
            c = grams[n - 1].get(g, 0)
            grams[n - 1][g] = c + 1
            h = hists[n - 1].setdefault(g // v, [0, 0])
            h[0] += 1
            h[1] += c == 0
    return out


def adaptive_baseline(model: KneserNey, val_ids: np.ndarray, test_ids: np.ndarray,
                      log_probs: dict[str, np.ndarray] | None = None) -> dict:
    """Kneser-Ney mixed with a cache of the text read so far, ``(1 - lam) P_KN + lam P_cache``;
    ``lam`` minimises the validation cross-entropy (a grid of 0.01 steps). ``log_probs``: the model's
    ``{"val": ..., "test": ...}`` log-probabilities when the caller already has them."""
    texts = {"val": val_ids, "test": test_ids}
    log_probs = log_probs or {name: model.log_probs(ids) for name, ids in texts.items()}
    parts = {name: (np.exp(log_probs[name]), cache_probs(ids, model.order, model.vocab_size))
             for name, ids in texts.items()}
    grid = np.linspace(0.0, 0.99, 100)
    kn, cache = parts["val"]
    lam = float(grid[np.argmin([-np.log((1 - g) * kn + g * cache).mean() for g in grid])])

    def score(name):
        kn, cache = parts[name]
        return text_metrics(float(-np.log((1 - lam) * kn + lam * cache).sum()), len(kn))

    return {"cache_weight": lam, "val": score("val"), "test": score("test")}


def ngram_baseline(train_ids: np.ndarray, val_ids: np.ndarray, test_ids: np.ndarray, order: int,
                   vocab_size: int, adaptive: bool = False) -> dict:
    """Fit on train, tune discounts on validation, score test: the numbers a report quotes.
    ``adaptive`` adds the Kneser-Ney + cache scores under ``"adaptive"`` (see :func:`adaptive_baseline`)."""
    model = KneserNey(order, vocab_size).fit(train_ids).tune(val_ids)
    log_probs = {"val": model.log_probs(val_ids), "test": model.log_probs(test_ids)}  # scored once, used twice
    out = {"order": order, "discounts": model.discounts,
           **{name: text_metrics(float(-lp.sum()), len(lp)) for name, lp in log_probs.items()}}
    if adaptive:
        out["adaptive"] = adaptive_baseline(model, val_ids, test_ids, log_probs)
    return out


__all__ = ["KneserNey", "adaptive_baseline", "cache_probs", "ngram_baseline"]
