"""Translation metrics on detokenised text, with sacrebleu (one function per figure).

BLEU uses sacrebleu's ``13a`` tokenizer for Latin-script targets and its ``zh`` tokenizer (every
Chinese character a token) for Chinese, so scores compare with published sacrebleu figures.
"""
from __future__ import annotations

from rnnlab.errors import RnnlabError


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise RnnlabError(f"expected one hypothesis per reference, got {len(hypotheses)} hypotheses "
                          f"for {len(references)} references")
    if not references:
        raise RnnlabError("cannot score an empty test set")


def bleu(hypotheses: list[str], references: list[str], target_lang: str = "fr") -> float:
    """Corpus BLEU (0-100) of detokenised hypotheses against one reference each."""
    import sacrebleu

    _check(hypotheses, references)
    tokenize = "zh" if target_lang.startswith("zh") else "13a"
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100, character n-grams up to 6, beta 2)."""
    import sacrebleu

    _check(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, [references]).score)


def placeholders_kept(outputs: list[str], placeholders: list[list[str]]) -> tuple[int, int]:
    """``(kept, total)`` over sentences that have placeholders: a sentence counts as kept when every
    placeholder of its source appears in the output as often as in the source."""
    kept = total = 0
    for out, phs in zip(outputs, placeholders):
        if phs:
            total += 1
            kept += all(out.count(p) >= 1 for p in phs)
    return kept, total
