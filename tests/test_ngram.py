"""Interpolated Kneser-Ney n-gram baseline and the text metrics, on tiny hand-made sequences."""
import math

import numpy as np
import pytest

from rnnlab.errors import RnnlabError
from rnnlab.metrics.ngram import KneserNey, adaptive_baseline, cache_probs
from rnnlab.metrics.text import text_metrics


def test_bigram_probability_by_hand():
    # ids 1 2 1 2 1 3, vocabulary {0, 1, 2, 3}, D = 0.5 at both levels.
    # Level 2 (raw): c(12) = 2, c(13) = 1, so S(1) = 3, T(1) = 2.
    # Level 1 (continuation): distinct bigrams 12, 21, 13 give c(1) = c(2) = c(3) = 1, S = 3, T = 3:
    #   P1(w) = (1 - .5)/3 + .5 * 3/3 * 1/4 = 7/24 for w in {1, 2, 3}, P1(0) = 1/8.
    # P2(2|1) = (2 - .5)/3 + .5 * 2/3 * 7/24 = 43/72;  P2(3|1) = .5/3 + 7/72 = 19/72.
    m = KneserNey(2, 4, discounts=[0.5, 0.5]).fit(np.array([1, 2, 1, 2, 1, 3]))
    p = m.next_probs([1])
    np.testing.assert_allclose(p, [3 / 72, 7 / 72, 43 / 72, 19 / 72], rtol=1e-12)
    # Position 0 has no history, so it uses level 1 alone; unseen history 3 backs off fully to P1.
    np.testing.assert_allclose(np.exp(m.log_probs(np.array([1, 2]))), [7 / 24, 43 / 72], rtol=1e-12)
    np.testing.assert_allclose(m.next_probs([3]), [1 / 8, 7 / 24, 7 / 24, 7 / 24], rtol=1e-12)


def test_lower_order_uses_continuation_counts():
    # "2" occurs 4 times but after only 2 distinct characters (1 and 3): its level-1 count is 2.
    # Distinct bigrams 12, 21, 23, 32: c(1) = 1, c(2) = 2, c(3) = 1, S = 4, T = 3, D = .5:
    #   P1(2) = 1.5/4 + .5 * 3/4 * 1/4 = 15/32;  P1(1) = P1(3) = .5/4 + 3/32 = 7/32;  P1(0) = 3/32.
    m = KneserNey(2, 4, discounts=[0.5, 0.5]).fit(np.array([1, 2, 1, 2, 1, 2, 3, 2]))
    np.testing.assert_allclose(m.next_probs([]), [3 / 32, 7 / 32, 15 / 32, 7 / 32], rtol=1e-12)


def test_unigram_closed_form():
    ids = np.array([1, 1, 1, 2, 2, 3])
    d = 0.3
    m = KneserNey(1, 5, discounts=[d]).fit(ids)
    counts = np.bincount(ids, minlength=5)
    expect = np.maximum(counts - d, 0) / 6 + d * 3 / 6 / 5
    np.testing.assert_allclose(m.next_probs([2, 3]), expect, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_distributions_sum_to_one(order):
    rng = np.random.default_rng(order)
    v = 7
    ids = rng.choice(v - 1, size=3000, p=[.4, .2, .15, .1, .1, .05]) + 1   # id 0 never trains
    m = KneserNey(order, v, discounts=list(rng.uniform(0.05, 0.95, order))).fit(ids)
    for _ in range(6):
        ctx = rng.integers(0, v, size=int(rng.integers(0, order + 2)))      # short, long, unseen
        p = m.next_probs(ctx)
        assert p.shape == (v,) and (p > 0).all()
        assert abs(p.sum() - 1) < 1e-9
    # log_probs agrees with next_probs at every position, early short-history ones included.
    seq = rng.integers(0, v, size=12)
    lp = m.log_probs(seq)
    for t in range(len(seq)):
        assert lp[t] == pytest.approx(math.log(m.next_probs(seq[max(0, t - order + 1):t])[seq[t]]), rel=1e-12)


def test_higher_order_wins_on_repetitive_text():
    text = "to be, or not to be, that is the question. " * 30
    chars = sorted(set(text))
    ids = np.array([chars.index(c) + 1 for c in text])
    train, val, test = ids[:800], ids[800:1000], ids[1000:]
    bpc = {n: KneserNey(n, len(chars) + 1).fit(train).tune(val).score(test)["bpc"] for n in (1, 3, 5)}
    assert bpc[5] < bpc[3] < bpc[1]
    assert bpc[5] < 0.5 < 3 < bpc[1]


def test_tune_lowers_validation_loss_and_keeps_discounts_valid():
    rng = np.random.default_rng(1)
    base = rng.integers(1, 6, size=40)
    ids = np.concatenate([base if rng.random() < .7 else rng.integers(1, 6, size=40) for _ in range(60)])
    m = KneserNey(4, 6, discounts=[0.5] * 4).fit(ids[:1800])
    before = -m.log_probs(ids[1800:]).mean()
    m.tune(ids[1800:])
    assert -m.log_probs(ids[1800:]).mean() <= before
    assert len(m.discounts) == 4 and all(0 < d < 1 for d in m.discounts)


def test_short_training_text():
    m = KneserNey(5, 4).fit(np.array([1, 2]))     # shorter than the order: levels 3..5 stay empty
    assert abs(m.next_probs([1, 2, 1, 2]).sum() - 1) < 1e-12
    assert np.isfinite(m.log_probs(np.array([3, 1, 2, 0]))).all()


def test_text_metrics_by_hand():
    n = 1000
    r = text_metrics(n * math.log(4), n)                # uniform over 4 symbols
    assert r["bpc"] == pytest.approx(2.0)
    assert r["perplexity"] == pytest.approx(4.0)
    assert r["nats_per_char"] == pytest.approx(math.log(4))
    assert text_metrics(0.0, 3) == {"nats_per_char": 0.0, "bpc": 0.0, "perplexity": 1.0}


@pytest.mark.parametrize("call, words", [
    (lambda: KneserNey(0, 10), ["order", ">= 1", "0"]),
    (lambda: KneserNey(2.5, 10), ["order", "2.5"]),
    (lambda: KneserNey(11, 81), ["2**63", "81**11"]),
    (lambda: KneserNey(2, 4).fit(np.array([1, 2, 4])), ["[0, 4)", "from 1 to 4"]),
    (lambda: KneserNey(2, 4).fit(np.array([-1, 2])), ["[0, 4)", "from -1 to 2"]),
    (lambda: KneserNey(2, 4).fit(np.array([1.0, 2.0])), ["integer ids", "float64"]),
    (lambda: KneserNey(2, 4).fit(np.array([], dtype=np.int64)), ["non-empty", "(0,)"]),
    (lambda: KneserNey(2, 4).fit(np.array([1, 2])).log_probs(np.array([5])), ["[0, 4)", "from 5 to 5"]),
    (lambda: KneserNey(2, 4).log_probs(np.array([1])), ["fit"]),
    (lambda: KneserNey(2, 4, discounts=[0.5]), ["2 discounts", "[0.5]"]),
    (lambda: KneserNey(2, 4, discounts=[0.5, 1.0]), ["(0, 1)", "1.0"]),
    (lambda: text_metrics(1.0, 0), ["n_chars", "positive", "0"]),
    (lambda: text_metrics(-1.0, 3), ["total_nats", "-1.0"]),
])
def test_bad_input_names_expected_and_given(call, words):
    with pytest.raises(RnnlabError) as e:
        call()
    for w in words:
        assert w in str(e.value)


def test_cache_probabilities_by_hand():
    # Order 1, V = 2, text "0 0 0": nothing read yet -> 1/2; then (c + T/V) / (n + T) with T = 1 type seen.
    assert cache_probs(np.array([0, 0, 0]), 1, 2) == pytest.approx([0.5, (1 + 0.5) / 2, (2 + 0.5) / 3])


def test_cache_is_a_distribution_and_reads_only_the_past():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 40)
    total = sum(cache_probs(np.r_[ids, w], 3, 4)[-1] for w in range(4))
    assert total == pytest.approx(1.0)
    # The probability at t is the same whatever follows t.
    assert cache_probs(ids, 3, 4)[:30] == pytest.approx(cache_probs(ids[:30], 3, 4))


def test_adaptive_baseline_learns_a_text_the_training_never_had():
    train = np.tile([0, 1, 2, 3], 50)
    held_out = np.tile([3, 2, 1, 0, 0], 40)   # a new pattern, repeated
    model = KneserNey(3, 4).fit(train).tune(held_out)
    adaptive = adaptive_baseline(model, held_out, held_out)
    assert adaptive["cache_weight"] > 0.5
    assert adaptive["test"]["bpc"] < 0.5 * model.score(held_out)["bpc"]
