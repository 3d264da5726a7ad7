"""``rnnlab speech``: spoken digits, letters and NATO words, trained on synthetic voices, tested on human ones.

Data -> model -> fit -> evaluate against a peer, top to bottom:

* data: the 62 words (zero..nine, a..z, alpha..zulu) synthesised by espeak-ng, flite and festival
  in hundreds of voice settings, cached (:mod:`rnnlab.data.speech`); every word also gets distorted copies
  (speed, time shift, room, telephone band, gain, noise); features at 8 kHz: Google's speech embedding,
  a frozen network trained on human speech (:mod:`rnnlab.data.speech_embedding`), or log-mel bands;
* models: :class:`WordClassifier` (bidirectional LSTM/GRU/RNN over the embeddings, or over the
  cepstra with SpecAugment, mean+max pooled) for isolated words, and :class:`DigitCTC`
  (bidirectional LSTM + CTC loss, over log-mel cepstra by default) for connected digit strings built
  by joining synthesised digits with random pauses; greedy and prefix-beam decoding
  (:func:`greedy_decode`, :func:`beam_decode`);
* fit: the one :class:`~rnnlab.train.Trainer` (length-bucketed batches, cosine decay, time limit,
  best-validation checkpoint), validated on synthetic voices never trained on;
* evaluate: accuracy on 115 human recordings (:func:`rnnlab.data.speech.human_test_set`) and on
  the held-out voices, a confusion matrix, digit-string word error rate, and the peer pocketsphinx
  (a 62-word JSGF grammar, one fresh decoder per file) on the same human files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnlab
from rnnlab.data import speech as sd
from rnnlab.errors import RnnlabError
from rnnlab.metrics.speech import accuracy, confusion_matrix, word_error_rate
from rnnlab.runs import new_run_dir, print_table, save_figure, write_config, write_metrics
from rnnlab.train import CosineDecay, TimeLimit, Trainer, seed_everything
from rnnlab.train.data import BucketedBatches

CELLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}
WORDS = sd.WORDS
BLANK = 0  # CTC blank; digit d is label d + 1


@dataclass
class Config:
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.2
    front: str = "embedding"        # what the models read: Google's speech embedding (trained on human speech,
                                    # rnnlab.data.speech_embedding) or "mfcc" (log-mel bands -> cepstra)
    cepstra: int = 20               # mfcc: DCT of the log-mel bands kept (drops pitch harmonics); 0: log-mel
    stack: int = 3                  # mfcc: frames joined per recurrent step (10 ms each)
    espeak_voices: int = 300        # espeak-ng training settings (accent x variant x speed x pitch)
    flite_voices: int = 120         # flite training settings (4 voices x duration x pitch)
    festival_voices: int = 40       # festival training settings (3 voices x duration x pitch): more natural
                                    # voices, better on the held-out ones with the embedding (docs/speech.md)
    val_espeak_voices: int = 24     # held-out voices for validation
    val_flite_voices: int = 8
    val_festival_voices: int = 0    # festival has no held-out voice (all 3 train): must stay 0
    augment_copies: int = 1         # distorted copies per synthesised word (besides the clean one)
    reverb: float = 0.5             # chance that a distorted copy is also played in a synthetic room
    pad: float = 0.15               # up to this many seconds of (noisy) silence before and after a distorted copy
    trim_db: float = sd.TRIM_DB     # a recording's leading/trailing audio this far below its peak is cut
    human_train_copies: int = 60    # distorted copies of each of qabcs-data's 28 human letters trained on
                                    # (0: synthetic voices only)
    ensemble: int = 2               # word classifiers reading `front`, member k on its own draw of training voices
                                    # (seed + k); their probabilities are averaged (docs/speech.md, session 11)
    mfcc_members: int = 1           # more word classifiers, reading cepstra, after the `ensemble` ones (member k
                                    # on its own voices too, seed + k): their errors are not the embedding's
                                    # (docs/speech.md, session 14)
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 3e-3
    max_minutes: float = 20.0       # each classifier's training stops after this (12 epochs take about 8 on
                                    # embeddings, 13-18 on cepstra)
    ctc_strings: int = 6000         # connected digit strings (3-6 digits) for the CTC model
    ctc_val_strings: int = 300
    ctc_front: str = "mfcc"         # the digit-string model's features: log-mel frames every 10 ms read digit
                                    # strings as well as the 80 ms embeddings or better (docs/speech.md, session 10)
    ctc_hidden: int = 128
    ctc_layers: int = 2
    ctc_epochs: int = 12
    ctc_max_minutes: float = 14.0
    beam: int = 8                   # prefix beam width for digit strings (1: greedy)
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.reverb <= 1.0:
            raise RnnlabError(f"reverb is a probability: expected 0..1, got {self.reverb}")
        if not 0.0 <= self.pad <= 2.0:
            raise RnnlabError(f"pad is seconds of silence around a word: expected 0..2, got {self.pad}")
        if not 10.0 <= self.trim_db <= 120.0:
            raise RnnlabError(f"trim_db: expected 10..120 dB below the peak, got {self.trim_db}")
        for name in ("front", "ctc_front"):
            if getattr(self, name) not in sd.FRONTS:
                raise RnnlabError(f"{name} must be one of {sd.FRONTS}, got {getattr(self, name)!r}")
        if self.human_train_copies < 0:
            raise RnnlabError(f"human_train_copies: expected 0 or more copies, got {self.human_train_copies}")
        if self.ensemble < 1:
            raise RnnlabError(f"ensemble is a number of word classifiers: expected 1 or more, got {self.ensemble}")
        if self.mfcc_members < 0:
            raise RnnlabError(f"mfcc_members is a number of word classifiers: expected 0 or more, "
                              f"got {self.mfcc_members}")


def classifier_fronts(config: Config) -> list[str]:
    """What each word classifier reads, member by member: ``ensemble`` on ``front``, then ``mfcc_members``
    on cepstra."""
    return [config.front] * config.ensemble + ["mfcc"] * config.mfcc_members


def by_front(config: Config, make) -> tuple:
    """``make(front) -> (x, lengths, *rest)`` once for each front end the word classifiers read. One front: its
    tensors as they are; several: ``x`` and ``lengths`` as dicts front -> tensor (what :class:`WordEnsemble`
    reads), ``rest`` (the labels, the same words in the same order) from the first."""
    made = {front: make(front) for front in dict.fromkeys(classifier_fronts(config))}
    first = next(iter(made.values()))
    if len(made) == 1:
        return first
    return ({f: m[0] for f, m in made.items()}, {f: m[1] for f, m in made.items()}, *first[2:])


# -- data ------------------------------------------------------------------------------------------


def voice_sets(config: Config, train_seed: int | None = None) -> tuple[list[sd.Voice], list[sd.Voice]]:
    """The training and held-out voice settings; ``train_seed``: draw the training ones with this seed
    instead of ``config.seed`` (an ensemble member's own voices), the held-out ones unchanged."""
    seed = config.seed if train_seed is None else train_seed
    train = sd.sample_voices(config.espeak_voices, config.flite_voices, "train", seed, config.festival_voices)
    val = sd.sample_voices(config.val_espeak_voices, config.val_flite_voices, "val", config.seed,
                           config.val_festival_voices)
    sd.check_voice_split(train, val)
    return train, val


def word_features(waves: list[list[np.ndarray]], copies: int, seed: int, front: str, clean: bool = True,
                  reverb: float = 0.0, pad: float = 0.15, extra: list[tuple[int, np.ndarray, int]] = (),
                  progress: str | None = None):
    """Features (``front``: see :func:`rnnlab.data.speech.front_features`) and labels of every voice's 62
    words: the clean word and ``copies`` distorted ones; ``extra``: more ``(label, wave, copies)`` words
    (the human training letters). ``progress``: a progress bar over the voices with this title."""
    from tqdm.auto import tqdm

    feats, labels = [], []

    def add(label: int, y: np.ndarray, n: int, rng: np.random.Generator) -> None:
        if clean:
            feats.append(sd.front_features(y, front))
            labels.append(label)
        for _ in range(n):
            feats.append(sd.front_features(sd.augment(y, rng, reverb, pad), front))
            labels.append(label)

    for v, words in enumerate(tqdm(waves, desc=progress, disable=not progress, file=sys.stderr, leave=False,
                                   dynamic_ncols=True, unit="voice")):
        rng = np.random.default_rng([seed, v])
        for label, y in enumerate(words):
            add(label, y, copies, rng)
    rng = np.random.default_rng([seed, len(waves)])
    for label, y, n in extra:
        add(label, y, n, rng)
    x, lengths = sd.pad_features(feats)
    return torch.from_numpy(x), torch.from_numpy(lengths), torch.tensor(labels)


def human_training_words(config: Config) -> list[tuple[int, np.ndarray, int]]:
    """qabcs-data's human letters as ``(label, wave, copies)``, after checking no test speaker is among them."""
    if not config.human_train_copies:
        return []
    items = sd.human_training_set()
    sd.check_speaker_split(items, sd.human_test_set())
    return [(WORDS.index(r.word), sd.trim(sd.load_audio(r.path), config.trim_db), config.human_train_copies)
            for r in items]


def digit_strings(waves: list[list[np.ndarray]], n: int, seed: int, front: str, augment: bool = True,
                  reverb: float = 0.0):
    """``n`` connected digit strings (3-6 digits of one voice, 30-300 ms pauses), features and labels."""
    rng = np.random.default_rng([seed, 7])
    feats, targets = [], []
    for _ in range(n):
        words = waves[rng.integers(len(waves))]
        digits = rng.integers(0, 10, size=rng.integers(3, 7))
        parts = [np.zeros(int(rng.uniform(0.02, 0.2) * sd.SAMPLE_RATE), np.float32)]
        for d in digits:
            parts += [words[d], np.zeros(int(rng.uniform(0.03, 0.3) * sd.SAMPLE_RATE), np.float32)]
        y = np.concatenate(parts)
        feats.append(sd.front_features(sd.augment(y, rng, reverb) if augment else y, front))
        targets.append(digits + 1)
    x, lengths = sd.pad_features(feats)
    t = np.zeros((n, 6), dtype=np.int64)
    for i, d in enumerate(targets):
        t[i, :len(d)] = d
    return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(t)


# -- models ----------------------------------------------------------------------------------------


def stack_frames(x: Tensor, lengths: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """Join every ``k`` frames into one step: ``(B, T, F) -> (B, ceil(T/k), k*F)`` (half the steps).
    Frames past each length are zeroed first, so padding never leaks into a sequence's last step."""
    b, t, f = x.shape
    x = x.masked_fill((torch.arange(t).view(1, t, 1) >= lengths.view(b, 1, 1)), 0.0)
    pad = (-t) % k
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(b, (t + pad) // k, k * f), (lengths + k - 1) // k


def warp_mel(x: Tensor, alpha: Tensor) -> Tensor:
    """Stretch the mel axis of ``(B, T, F)`` log-mel frames by ``alpha`` ``(B, 1, 1)``, one per utterance:
    channel ``k`` takes the value at ``k * alpha``, linearly interpolated. ``alpha`` > 1 moves formants
    down, as a longer vocal tract does (vocal tract length normalisation, Lee & Rose 1996)."""
    b, t, f = x.shape
    pos = (torch.arange(f, dtype=x.dtype).view(1, 1, f) * alpha).clamp(max=f - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=f - 1)
    w = pos - lo
    return x.gather(2, lo.expand(b, t, f)) * (1 - w) + x.gather(2, hi.expand(b, t, f)) * w


def spec_augment(x: Tensor, lengths: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """SpecAugment (Park et al. 2019) without time warping, plus a random frequency-axis warp.

    Each utterance's mel axis is stretched by 0.88-1.12 (a vocal tract length change), then two
    bands of up to 6 mel channels and two spans of up to 10% of its frames are set to 0 (the mean).
    """
    b, t, f = x.shape
    x = warp_mel(x, torch.empty(b, 1, 1).uniform_(0.88, 1.12, generator=gen))
    mask = torch.zeros(b, t, f, dtype=torch.bool)
    chan = torch.arange(f).view(1, f)
    steps = torch.arange(t).view(1, t)
    for _ in range(2):
        width = torch.randint(0, 7, (b, 1), generator=gen)
        start = (torch.rand(b, 1, generator=gen) * (f - width)).long()
        mask |= ((chan >= start) & (chan < start + width)).unsqueeze(1)
        twidth = (torch.rand(b, 1, generator=gen) * 0.1 * lengths.view(b, 1)).long()
        tstart = (torch.rand(b, 1, generator=gen) * (lengths.view(b, 1) - twidth).clamp(min=1)).long()
        mask |= ((steps >= tstart) & (steps < tstart + twidth)).unsqueeze(2)
    return x.masked_fill(mask, 0.0)


class Cepstra(nn.Module):
    """Log-mel bands -> the first ``n`` DCT-II coefficients (MFCCs; ``n`` = 0 keeps the bands), scaled
    per coefficient to unit variance on the training data (``scale``, set by :func:`train`).

    Keeping only the slow changes across the bands keeps the vocal-tract envelope and drops the
    pitch harmonics, which differ most between synthetic and human voices."""

    def __init__(self, bands: int = sd.N_MELS, n: int = 20):
        super().__init__()
        self.out_features = n or bands
        k = torch.arange(bands, dtype=torch.float32)
        dct = torch.cos(math.pi / bands * (k.view(-1, 1) + 0.5) * torch.arange(n or bands).view(1, -1))
        self.register_buffer("dct", dct * math.sqrt(2.0 / bands) if n else torch.eye(bands))
        self.register_buffer("scale", torch.ones(self.out_features))

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.dct) / self.scale


def _encode(model: nn.Module, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The front end both speech models share: crop to the longest utterance, SpecAugment while
    training, cepstra, stacked frames, then the model's recurrent layer over the valid steps."""
    lengths = lengths.clamp(min=1)
    x = x[:, :int(lengths.max())]
    if model.training and model.augment:
        x = spec_augment(x, lengths)
    x, lengths = stack_frames(model.front(x), lengths, model.stack)
    out, _ = model.rnn(x, lengths=lengths)
    return out, lengths


class WordClassifier(nn.Module):
    """Features (speech embeddings, or log-mel frames -> cepstra, ``stack`` frames per step) ->
    bidirectional LSTM/GRU/RNN -> mean and max over the valid steps -> linear read-out over the words.
    ``forward(x, lengths) -> logits``."""

    def __init__(self, n_classes: int = len(WORDS), cell: str = "lstm", hidden: int = 128, layers: int = 2,
                 dropout: float = 0.2, n_features: int = sd.N_MELS, augment: bool = True, cepstra: int = 20,
                 stack: int = 3):
        super().__init__()
        if cell not in CELLS:
            raise RnnlabError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.augment, self.stack = augment, stack
        self.front = Cepstra(n_features, cepstra)
        self.rnn = CELLS[cell](stack * self.front.out_features, hidden, num_layers=layers, batch_first=True,
                               bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, n_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        out, lengths = _encode(self, x, lengths)
        valid = (torch.arange(out.shape[1]).view(1, -1) < lengths.view(-1, 1)).unsqueeze(2)
        mean = (out * valid).sum(1) / lengths.view(-1, 1).to(out.dtype)
        peak = out.masked_fill(~valid, -1e4).max(1).values
        return self.head(self.drop(torch.cat([mean, peak], 1)))


class WordEnsemble(nn.Module):
    """Word classifiers trained apart (seeds seed..seed+N-1, each on its own training voices) read as
    one: ``forward(x, lengths)`` gives ``log (1/K) sum_k p_k(word)``, the log of the members' mean
    probability, in place of logits (a softmax leaves it unchanged), so the argmax, the probability
    and the scoring are those of one model.
    The members' errors are partly independent, so the mean is usually better than any one of them.
    ``fronts``: what each member reads, when they read different front ends; ``x`` and ``lengths`` are
    then dicts front -> tensor (:func:`by_front`)."""

    def __init__(self, members: list[WordClassifier], fronts: list[str] | None = None):
        super().__init__()
        if len(members) < 2:
            raise RnnlabError(f"an ensemble needs at least 2 word classifiers, got {len(members)}")
        if fronts is not None and len(fronts) != len(members):
            raise RnnlabError(f"expected a front end for each of the {len(members)} word classifiers, "
                              f"got {len(fronts)}: {fronts}")
        self.members = nn.ModuleList(members)
        self.fronts = list(fronts) if fronts is not None else None

    def forward(self, x: Tensor | dict, lengths: Tensor | dict) -> Tensor:
        inputs = [(x, lengths)] * len(self.members) if self.fronts is None else \
            [(_read(x, f), _read(lengths, f)) for f in self.fronts]
        logp = torch.stack([m(*a).log_softmax(-1) for m, a in zip(self.members, inputs)])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))


def _read(inputs: Tensor | dict, front: str) -> Tensor:
    """One front end's tensor from :func:`by_front`'s dict (a lone tensor: the only front end)."""
    if not isinstance(inputs, dict):
        return inputs
    if front not in inputs:
        raise RnnlabError(f"expected features of the {front!r} front end for a word classifier, got {sorted(inputs)}")
    return inputs[front]


class DigitCTC(nn.Module):
    """Features (as :class:`WordClassifier`'s) -> bidirectional LSTM -> per-step log-probabilities
    over blank + 10 digits. ``forward(x, lengths) -> (log_probs (B, T', 11), lengths (B,))``."""

    def __init__(self, hidden: int = 96, layers: int = 1, dropout: float = 0.1, n_features: int = sd.N_MELS,
                 augment: bool = True, cepstra: int = 20, stack: int = 3):
        super().__init__()
        self.augment, self.stack = augment, stack
        self.front = Cepstra(n_features, cepstra)
        self.rnn = rnnlab.LSTM(stack * self.front.out_features, hidden, num_layers=layers, batch_first=True,
                               bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(2 * hidden, 11)

    def forward(self, x: Tensor, lengths: Tensor):
        out, lengths = _encode(self, x, lengths)
        return self.head(out).log_softmax(-1), lengths


def ctc_loss(pred, target: Tensor) -> Tensor:
    """CTC loss (Graves et al. 2006) of ``pred = (log_probs, lengths)`` against zero-padded labels."""
    log_probs, lengths = pred
    target_lengths = (target != BLANK).sum(1)
    return F.ctc_loss(log_probs.transpose(0, 1), target, lengths, target_lengths, blank=BLANK, zero_infinity=True)


def greedy_decode(log_probs: Tensor, length: int | None = None) -> list[int]:
    """Best path: the likeliest label each step, repeats merged, blanks dropped."""
    best = log_probs[:length].argmax(-1).tolist()
    out, prev = [], BLANK
    for k in best:
        if k != prev and k != BLANK:
            out.append(k)
        prev = k
    return out


def beam_decode(log_probs: Tensor, length: int | None = None, beam: int = 8) -> list[int]:
    """CTC prefix beam search (Hannun et al. 2014): keeps the ``beam`` likeliest label prefixes, each
    with the probability of ending in a blank and of ending in its last label, summed over paths."""
    lp = log_probs[:length].double().tolist()
    neg = -math.inf

    def add(a: float, b: float) -> float:
        if a == neg:
            return b
        if b == neg:
            return a
        m = max(a, b)
        return m + math.log(math.exp(a - m) + math.exp(b - m))

    beams: dict[tuple, tuple[float, float]] = {(): (0.0, neg)}  # prefix -> (log P ends in blank, ends in label)
    for step in lp:
        nxt: dict[tuple, list[float]] = {}

        def get(prefix):
            return nxt.setdefault(prefix, [neg, neg])

        for prefix, (pb, pnb) in beams.items():
            total = add(pb, pnb)
            entry = get(prefix)
            entry[0] = add(entry[0], total + step[BLANK])  # a blank: the prefix stays
            if prefix:  # the last label repeated without a blank between: merged, the prefix stays
                entry[1] = add(entry[1], pnb + step[prefix[-1]])
            for k in range(len(step)):
                if k == BLANK:
                    continue
                longer = get(prefix + (k,))
                if prefix and k == prefix[-1]:  # a repeat counts as new only after a blank
                    longer[1] = add(longer[1], pb + step[k])
                else:
                    longer[1] = add(longer[1], total + step[k])
        ranked = sorted(nxt.items(), key=lambda kv: add(*kv[1]), reverse=True)[:beam]
        beams = {p: (v[0], v[1]) for p, v in ranked}
    return list(max(beams.items(), key=lambda kv: add(*kv[1]))[0])


# -- training ------------------------------------------------------------------------------------


def _fit(model: nn.Module, loss, train_data, val_data, n_train: int, config: Config, epochs: int, minutes: float,
         run_dir: Path, verbose: int, metrics=(), resume: bool = False,
         best_monitor: str = "val_loss") -> tuple[dict, float]:
    steps = max(1, -(-n_train // config.batch_size))
    limit = TimeLimit(minutes)
    decay = CosineDecay(config.learning_rate, steps * epochs, steps)
    trainer = Trainer(model, loss, learning_rate=config.learning_rate, clipnorm=1.0, metrics=metrics,
                      callbacks=[decay, limit], seed=config.seed, run_dir=run_dir, keep_last=1,
                      best_monitor=best_monitor,
                      config={"task": dataclasses.asdict(config), "words": list(WORDS), "model": type(model).__name__})
    start = time.perf_counter()
    # --resume continues from the last checkpoint of this part, if it got that far (synthesis is cached)
    history = trainer.fit(train_data, epochs=epochs, batch_size=config.batch_size, validation_data=val_data,
                          verbose=verbose, resume=resume and (run_dir / "checkpoints" / "last.safetensors").is_file())
    seconds = time.perf_counter() - start
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    best = run_dir / "checkpoints" / "best.safetensors"
    load_model_weights(model, load_checkpoint(best)["model"], best)
    model.eval()
    return {"epochs": len(history.history["loss"]), "stopped_by_time_limit": limit.stopped_early,
            "history": history.history}, seconds


def _front_arguments(front: str, config: Config) -> dict:
    """A model's input side for ``front``. Embeddings are read one per step as they are (scaled to unit
    variance), without SpecAugment: their 96 numbers are not a frequency axis to warp or mask."""
    if front == "embedding":
        from rnnlab.data.speech_embedding import DIM

        return dict(n_features=DIM, cepstra=0, stack=1, augment=False)
    return dict(n_features=sd.N_MELS, cepstra=config.cepstra, stack=config.stack, augment=True)


def build_classifier(config: Config, front: str | None = None) -> WordClassifier:
    """A word classifier reading ``front`` (default: ``config.front``)."""
    return WordClassifier(len(WORDS), config.cell, config.hidden, config.layers, config.dropout,
                          **_front_arguments(front or config.front, config))


def build_ctc(config: Config) -> DigitCTC:
    return DigitCTC(config.ctc_hidden, config.ctc_layers, **_front_arguments(config.ctc_front, config))


@torch.no_grad()
def _set_scale(front: Cepstra, x: Tensor, lengths: Tensor) -> None:
    """Unit variance per input feature over the valid frames of the training data."""
    valid = torch.arange(x.shape[1]).view(1, -1) < lengths.view(-1, 1)
    front.scale.fill_(1.0)
    front.scale.copy_(front(x[valid]).std(0).clamp(min=1e-3))


def train(config: Config, run_dir: Path, verbose: int = 1, resume: bool = False) -> dict:
    """Synthesise (cached), fit the word classifier and the digit-string CTC model, score both."""
    seed_everything(config.seed)
    t0 = time.perf_counter()
    train_voices, val_voices = voice_sets(config)
    train_waves = sd.synthesize_all(train_voices, verbose=verbose > 0)
    val_waves = sd.synthesize_all(val_voices, verbose=verbose > 0)
    synth_s = time.perf_counter() - t0
    if verbose:
        print(f"{len(train_voices)} training and {len(val_voices)} validation voice settings "
              f"({len({v.identity for v in train_voices})} and {len({v.identity for v in val_voices})} voices); "
              f"features ...", flush=True)
    t1 = time.perf_counter()
    human_words = human_training_words(config)
    vx, vlengths, vy = by_front(config, lambda front: word_features(val_waves, 0, config.seed, front))
    val_feature_s = time.perf_counter() - t1
    fronts = classifier_fronts(config)

    def member_words(k: int):
        """Member ``k``'s training words, in its front end's features: the run's voices for the first, its own
        draw for the others."""
        waves = train_waves if k == 0 else sd.synthesize_all(voice_sets(config, config.seed + k)[0],
                                                             verbose=verbose > 0)
        return word_features(waves, config.augment_copies, config.seed + k, fronts[k], reverb=config.reverb,
                             pad=config.pad, extra=human_words,
                             progress=f"{fronts[k]} features, model {k + 1}/{len(fronts)}" if verbose else None)

    model, fits, feature_s, train_s = train_classifiers(config, member_words, (vx, vlengths, vy), run_dir, verbose,
                                                        resume)
    fit = fits[0]
    held_out = held_out_scores(model, vx, vlengths, vy, val_voices)
    human = human_scores(model, config)
    plot_scores(held_out, human, run_dir)

    t2 = time.perf_counter()
    ctc = train_ctc(config, train_waves, val_waves, run_dir / "ctc", verbose, resume) if config.ctc_strings else None
    ctc_s = time.perf_counter() - t2
    plot_curves(fit["history"], ctc["history"] if ctc else None, run_dir / "loss.png")
    metrics = {
        **word_figures(held_out, human),
        "digit_string_wer": ctc["wer"]["beam"] if ctc else None,
        "digit_string_wer_greedy": ctc["wer"]["greedy"] if ctc else None,
        "train_utterances": fit["train_utterances"], "val_utterances": len(vy),
        "human_train_utterances": len(human_words) * (1 + config.human_train_copies),
        "train_voices": len({v.identity for v in train_voices}), "train_voice_settings": len(train_voices),
        "val_voices": len({v.identity for v in val_voices}), "val_voice_settings": len(val_voices),
        "ensemble": config.ensemble, "mfcc_members": config.mfcc_members,
        "epochs": [f["epochs"] for f in fits] if len(fits) > 1 else fit["epochs"],
        "stopped_by_time_limit": any(f["stopped_by_time_limit"] for f in fits),
        "ctc_epochs": ctc["epochs"] if ctc else 0, "ctc_train_strings": config.ctc_strings,
        "ctc_val_strings": config.ctc_val_strings if ctc else 0,
        "synthesis_minutes": synth_s / 60, "feature_minutes": (val_feature_s + feature_s) / 60,
        "train_minutes": train_s / 60, "ctc_minutes": ctc_s / 60, "total_minutes": (time.perf_counter() - t0) / 60,
        "checkpoint": str(run_dir / "checkpoints" / "best.safetensors"),
        "ctc_checkpoint": str(run_dir / "ctc" / "checkpoints" / "best.safetensors"),
    }
    return metrics


def member_dir(run_dir: Path, k: int) -> Path:
    """Where ensemble member ``k`` (0-based) keeps its checkpoints: the first in the run folder itself
    (a one-model run is laid out as before), the others in ``member-2``, ``member-3``, ..."""
    return run_dir if k == 0 else run_dir / f"member-{k + 1}"


def train_classifiers(config: Config, member_words, val: tuple, run_dir: Path, verbose: int = 1,
                      resume: bool = False) -> tuple[nn.Module, list[dict], float, float]:
    """The word classifiers of :func:`classifier_fronts`, member ``k`` trained on ``member_words(k) -> (x, lengths,
    labels)`` in its front end's features and seeded ``seed + k``, each keeping its epoch with the best accuracy
    on ``val`` (:func:`by_front`'s features of the held-out words). Returns ``(the classifier or their
    WordEnsemble, each member's fit, seconds making features, seconds training)``.

    Members that differ only in their seed share most of their errors (one more on the same words
    moved the held-out voices by +0.15 points, docs/speech.md); members that also hear different
    training voices disagree more, so their mean gains more."""
    (vx, vlengths, vy) = val
    fronts = classifier_fronts(config)
    members, fits, feature_s, train_s = [], [], 0.0, 0.0
    for k, front in enumerate(fronts):
        start = time.perf_counter()
        x, lengths, y = member_words(k)
        feature_s += time.perf_counter() - start
        member_config = dataclasses.replace(config, seed=config.seed + k)
        seed_everything(member_config.seed)
        model = build_classifier(config, front)
        val_data = BucketedBatches((_read(vx, front), _read(vlengths, front)), vy, _read(vlengths, front), 256,
                                   shuffle=False)
        _set_scale(model.front, x, lengths)
        train_data = BucketedBatches((x, lengths), y, lengths, config.batch_size, seed=member_config.seed)
        fit, s = _fit(model, "cross_entropy", train_data, val_data, len(y), member_config, config.epochs,
                      config.max_minutes, member_dir(run_dir, k), verbose, metrics=["accuracy"], resume=resume,
                      best_monitor="val_accuracy")  # the figure reported; the loss keeps rising as it grows sure
        members.append(model)
        fits.append({**fit, "train_utterances": len(y)})
        train_s += s
        del x, lengths, y, train_data  # one member's features in memory at a time
    return ensemble_of(members, fronts), fits, feature_s, train_s


def ensemble_of(members: list[WordClassifier], fronts: list[str]) -> WordClassifier | WordEnsemble:
    """One classifier as it is, several as their :class:`WordEnsemble` (told each one's front end when they differ)."""
    if len(members) == 1:
        return members[0].eval()
    return WordEnsemble(members, fronts if len(set(fronts)) > 1 else None).eval()


def train_ctc(config: Config, train_waves, val_waves, run_dir: Path, verbose: int = 1, resume: bool = False) -> dict:
    """Fit :class:`DigitCTC` on digit strings of the training voices; WER on strings of the held-out ones."""
    cx, clengths, cy = digit_strings([w[:10] for w in train_waves], config.ctc_strings, config.seed, config.ctc_front,
                                     reverb=config.reverb)
    vcx, vclengths, vcy = digit_strings([w[:10] for w in val_waves], config.ctc_val_strings, config.seed + 1,
                                        config.ctc_front)
    ctc = build_ctc(config)
    _set_scale(ctc.front, cx, clengths)
    fit, _ = _fit(ctc, ctc_loss, BucketedBatches((cx, clengths), cy, clengths, config.batch_size, seed=config.seed),
                  BucketedBatches((vcx, vclengths), vcy, vclengths, 256, shuffle=False),
                  len(cy), config, config.ctc_epochs, config.ctc_max_minutes, run_dir, verbose, resume=resume)
    return {"wer": digit_string_wer(ctc, vcx, vclengths, vcy, config.beam), **fit}


# -- evaluation ------------------------------------------------------------------------------------


@torch.no_grad()
def predict_words(model: WordClassifier | WordEnsemble, x: Tensor, lengths: Tensor, batch: int = 256) -> Tensor:
    model.eval()
    first = next(iter(lengths.values())) if isinstance(lengths, dict) else lengths
    order = torch.argsort(first)
    out = torch.empty(len(first), dtype=torch.long)
    for idx in order.split(batch):
        out[idx] = model(_rows(x, idx), _rows(lengths, idx)).argmax(-1)
    return out


def _rows(inputs: Tensor | dict, idx: Tensor) -> Tensor | dict:
    """Rows ``idx`` of a tensor, or of each front end's tensor in :func:`by_front`'s dict."""
    return {f: t[idx] for f, t in inputs.items()} if isinstance(inputs, dict) else inputs[idx]


def recording_inputs(config: Config, paths: list[str]) -> tuple:
    """The word classifiers' inputs (:func:`by_front`) for recordings: silence trimmed at ``config.trim_db``."""
    def make(front: str) -> tuple[Tensor, Tensor]:
        x, lengths = sd.pad_features([sd.recording_features(p, config.trim_db, front) for p in paths])
        return torch.from_numpy(x), torch.from_numpy(lengths)

    return by_front(config, make)


@torch.no_grad()
def word_probabilities(model: WordClassifier | WordEnsemble, x: Tensor | dict, lengths: Tensor | dict) -> Tensor:
    """The probability of each word for one recording's inputs (:func:`recording_inputs`)."""
    model.eval()
    return model(x, lengths).softmax(-1)[0]


def human_scores(model: WordClassifier | WordEnsemble, config: Config) -> dict:
    """Accuracy (all, per group, per speaker) and the confusion matrix on the 115 human recordings."""
    items = sd.human_test_set()
    pred = predict_words(model, *recording_inputs(config, [r.path for r in items])).tolist()
    truth = [WORDS.index(r.word) for r in items]
    groups = {g: accuracy([p for p, t in zip(pred, truth) if WORDS[t] in words],
                          [t for t in truth if WORDS[t] in words]) for g, words in sd.GROUPS.items()}
    groups.update(_accuracy_by(pred, truth, [r.speaker for r in items]))
    return {"accuracy": accuracy(pred, truth), "n": len(items), "groups": groups,
            "confusion": confusion_matrix(pred, truth, len(WORDS)),
            "errors": [f"{Path(r.path).parent.parent.name}/{Path(r.path).parent.name}/{Path(r.path).name}: "
                       f"{WORDS[t]} -> {WORDS[p]}" for p, t, r in zip(pred, truth, items) if p != t]}


def held_out_scores(model: WordClassifier | WordEnsemble, x: Tensor | dict, lengths: Tensor | dict, labels: Tensor,
                    voices: list[sd.Voice]) -> dict:
    """Accuracy on the held-out voices' words (:func:`word_features` of them, clean: 62 rows per voice setting,
    in order): over all, per engine and per speaker, and the confusion matrix. The held-out speakers are
    uneven (docs/speech.md: flite's ``rms`` is what the overall figure lacks), so each is reported."""
    if len(labels) != len(WORDS) * len(voices):
        raise RnnlabError(f"expected {len(WORDS)} words for each of the {len(voices)} held-out voice settings "
                          f"({len(WORDS) * len(voices)}), got {len(labels)}")
    pred, truth = predict_words(model, x, lengths).tolist(), labels.tolist()
    who = [v for v in voices for _ in WORDS]
    return {"accuracy": accuracy(pred, truth), "n": len(truth),
            "groups": _accuracy_by(pred, truth, [v.engine for v in who]),
            "voices": dict(sorted(_accuracy_by(pred, truth, [v.identity for v in who]).items())),
            "confusion": confusion_matrix(pred, truth, len(WORDS))}


def _accuracy_by(pred: list[int], truth: list[int], keys: list[str]) -> dict[str, float]:
    """Accuracy over the rows of each key (a speaker, an engine), keys in order of first appearance."""
    return {k: accuracy([p for p, g in zip(pred, keys) if g == k], [t for t, g in zip(truth, keys) if g == k])
            for k in dict.fromkeys(keys)}


def word_figures(held_out: dict, human: dict) -> dict:
    """The word classifiers' figures for ``metrics.json`` / ``--json`` (train and eval report the same keys), from
    :func:`held_out_scores` and :func:`human_scores`."""
    return {"human_accuracy": human["accuracy"], "synthetic_accuracy": held_out["accuracy"],
            **{f"human_accuracy_{k}": v for k, v in human["groups"].items()},
            **{f"synthetic_accuracy_{k}": v for k, v in held_out["groups"].items()},
            "synthetic_accuracy_by_voice": held_out["voices"], "human_errors": human["errors"]}


def plot_scores(held_out: dict, human: dict, run_dir: Path) -> None:
    """The confusion matrices of the human test set and of the held-out voices, as PNG and CSV."""
    for name, scores, title in (("human", human, "human test set: {:.1%} of {} recordings"),
                                ("synthetic", held_out, "held-out voices: {:.1%} of {} words")):
        plot_confusion(scores["confusion"], run_dir / f"confusion_{name}.png",
                       title.format(scores["accuracy"], scores["n"]))
        np.savetxt(run_dir / f"confusion_{name}.csv", scores["confusion"], fmt="%d", delimiter=",",
                   header=",".join(WORDS))


@torch.no_grad()
def digit_string_wer(model: DigitCTC, x: Tensor, lengths: Tensor, targets: Tensor, beam: int = 8) -> dict:
    model.eval()
    log_probs, out_lengths = model(x, lengths)
    refs = [[int(v) for v in t if v != BLANK] for t in targets]
    greedy = [greedy_decode(lp, int(n)) for lp, n in zip(log_probs, out_lengths)]
    beamed = [beam_decode(lp, int(n), beam) for lp, n in zip(log_probs, out_lengths)] if beam > 1 else greedy
    return {"greedy": word_error_rate(greedy, refs), "beam": word_error_rate(beamed, refs)}


PS_SPELLING = {"juliett": "juliet", "xray": "x-ray"}  # cmudict's spelling of these words


def pocketsphinx_words(paths: list[str]) -> list[str]:
    """pocketsphinx's answer for each file, restricted by a JSGF grammar of the 62 words ("zed" is
    allowed as z). One fresh decoder per file (a reused one adapts and changes later results); the
    audio is resampled to its model's 16 kHz without dither."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RnnlabError("the peer needs pocketsphinx: pip install 'rnnlab[apps]' (or pocketsphinx)") from None
    import librosa
    import soundfile as sf

    back = {PS_SPELLING.get(w, w): w for w in WORDS}
    back["zed"] = "z"
    grammar = "#JSGF V1.0;\ngrammar words;\npublic <word> = " + " | ".join(sorted(back)) + " ;\n"
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        gram = os.path.join(tmp, "words.gram")
        Path(gram).write_text(grammar)
        for path in paths:
            y, sr = sf.read(path, dtype="float32", always_2d=True)
            y = librosa.resample(y.mean(1), orig_sr=sr, target_sr=16000, res_type="soxr_hq") if sr != 16000 else y.mean(1)
            pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16).tobytes()
            decoder = Decoder(jsgf=gram, samprate=16000, loglevel="FATAL")
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            words = hyp.hypstr.split() if hyp is not None else []
            out.append(back.get(words[0], "") if words else "")
    return out


def pocketsphinx_scores() -> dict:
    items = sd.human_test_set()
    said = pocketsphinx_words([r.path for r in items])
    truth = [r.word for r in items]
    groups = {g: accuracy([p for p, t in zip(said, truth) if t in words], [t for t in truth if t in words])
              for g, words in sd.GROUPS.items()}
    return {"accuracy": accuracy(said, truth), "groups": groups}


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 10))
    ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = np.arange(len(WORDS))
    ax.set_xticks(ticks, WORDS, rotation=90, fontsize=6)
    ax.set_yticks(ticks, WORDS, fontsize=6)
    for i, j in zip(*np.nonzero(matrix)):
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=5,
                color="white" if i == j else "red")
    ax.set_xlabel("recognised")
    ax.set_ylabel("spoken")
    ax.set_title(title)
    save_figure(fig, path)


def plot_curves(history: dict, ctc_history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, h, title in ((axes[0], history, "word classifier"), (axes[1], ctc_history, "digit strings (CTC)")):
        if not h:
            ax.axis("off")
            continue
        epochs = np.arange(1, len(h["loss"]) + 1)
        ax.plot(epochs, h["loss"], "o-", label="train")
        if "val_loss" in h:
            ax.plot(epochs, h["val_loss"], "o-", label="held-out voices")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend(fontsize=8)
    save_figure(fig, path)


# -- loading -----------------------------------------------------------------------------------------


def latest_run() -> Path:
    runs = sorted(p for p in Path("runs/speech").glob("*") if (p / "checkpoints" / "best.safetensors").is_file())
    if not runs:
        raise RnnlabError("no trained speech model found under runs/speech/; run 'rnnlab speech train' first "
                          "or pass --run-dir")
    return runs[-1]


def saved_config(task: dict) -> Config:
    """The :class:`Config` a run was trained with, from its checkpoint's ``task``. Runs from before
    ``front`` existed read log-mel frames, and before ``ctc_front`` both models read ``front``; before
    ``ensemble`` a run had one word classifier, and before ``mfcc_members`` none on cepstra besides; settings
    this version no longer has are dropped."""
    names = {f.name for f in dataclasses.fields(Config)}
    task = {"front": "mfcc", "ensemble": 1, "mfcc_members": 0, **task}
    task.setdefault("ctc_front", task["front"])
    return Config(**{k: v for k, v in task.items() if k in names})


def load_models(run_dir: Path) -> tuple[WordClassifier | WordEnsemble, DigitCTC | None, Config]:
    """A run's word classifier (its :class:`WordEnsemble` if it trained several), digit-string model
    (None if it trained none) and :class:`Config`."""
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    path = run_dir / "checkpoints" / "best.safetensors"
    if not path.is_file():
        raise RnnlabError(f"expected a 'rnnlab speech train' run folder with checkpoints/best.safetensors, "
                          f"got {str(run_dir)!r}")
    state = load_checkpoint(path)
    saved = state.get("config") or {}
    if saved.get("model") != "WordClassifier" or list(saved.get("words", [])) != list(WORDS):
        raise RnnlabError(f"{path} is not a 'rnnlab speech train' checkpoint")
    config = saved_config(saved["task"])
    members, fronts = [], classifier_fronts(config)
    for k, front in enumerate(fronts):
        path = member_dir(run_dir, k) / "checkpoints" / "best.safetensors"
        if not path.is_file():
            raise RnnlabError(f"expected {len(fronts)} word classifiers in {str(run_dir)!r}, got no "
                              f"{path.relative_to(run_dir)} (an unfinished run: 'rnnlab speech train --resume')")
        members.append(build_classifier(config, front))
        load_model_weights(members[-1], state["model"] if k == 0 else load_checkpoint(path)["model"], path)
    model = ensemble_of(members, fronts)
    ctc = None
    ctc_path = run_dir / "ctc" / "checkpoints" / "best.safetensors"
    if ctc_path.is_file():
        ctc = build_ctc(config)
        load_model_weights(ctc, load_checkpoint(ctc_path)["model"], ctc_path)
        ctc.eval()
    return model, ctc, config


def evaluate(run_dir: Path, peer: bool = True, verbose: int = 1, trim_db: float | None = None) -> dict:
    """The acceptance figures of a trained run: human and held-out-voice accuracy, digit-string WER,
    and pocketsphinx on the same human files. ``trim_db``: cut the human recordings' silence at this
    level instead of the run's own (the weights are untouched)."""
    model, ctc, config = load_models(run_dir)
    if trim_db is not None:
        config = dataclasses.replace(config, trim_db=trim_db)
    _, val_voices = voice_sets(config)
    val_waves = sd.synthesize_all(val_voices, verbose=verbose > 0)
    vx, vlengths, vy = by_front(config, lambda front: word_features(val_waves, 0, config.seed, front))
    held_out = held_out_scores(model, vx, vlengths, vy, val_voices)
    human = human_scores(model, config)
    metrics = word_figures(held_out, human)
    if ctc is not None:
        vcx, vclengths, vcy = digit_strings([w[:10] for w in val_waves], config.ctc_val_strings, config.seed + 1,
                                            config.ctc_front)
        metrics["digit_string_wer"] = digit_string_wer(ctc, vcx, vclengths, vcy, config.beam)["beam"]
    if peer:
        ps = pocketsphinx_scores()
        metrics["pocketsphinx_human_accuracy"] = ps["accuracy"]
        metrics.update({f"pocketsphinx_human_accuracy_{k}": v for k, v in ps["groups"].items()})
    metrics["trim_db"] = config.trim_db
    plot_scores(held_out, human, run_dir)
    return metrics


def recognize(path: str | os.PathLike, run_dir: Path | None = None, digits: bool = False) -> dict:
    """The word in one recording and its probability (``digits``: the digit string, CTC beam search)."""
    model, ctc, config = load_models(run_dir or latest_run())
    if digits:
        if ctc is None:
            raise RnnlabError(f"run folder {run_dir} has no digit-string model (ctc/checkpoints/best.safetensors)")
        feats = sd.recording_features(path, config.trim_db, config.ctc_front)
        with torch.no_grad():
            log_probs, n = ctc(torch.from_numpy(feats).unsqueeze(0), torch.tensor([len(feats)]))
        labels = beam_decode(log_probs[0], int(n[0]), config.beam)
        return {"digits": " ".join(sd.DIGITS[k - 1] for k in labels)}
    probs = word_probabilities(model, *recording_inputs(config, [path]))
    top = torch.topk(probs, 3)
    return {"word": WORDS[int(top.indices[0])], "probability": float(top.values[0]),
            "alternatives": {WORDS[int(i)]: float(p) for i, p in zip(top.indices[1:], top.values[1:])}}


# -- command line --------------------------------------------------------------------------------


DRY_RUN = dict(hidden=16, layers=1, espeak_voices=4, flite_voices=1, val_espeak_voices=2, val_flite_voices=1,
               epochs=1, ctc_strings=32, ctc_val_strings=16, ctc_hidden=16, ctc_layers=1, ctc_epochs=1, beam=2,
               augment_copies=1, human_train_copies=1, festival_voices=0)  # the default's members, tiny
DEMO = dict(hidden=64, layers=1, espeak_voices=30, flite_voices=4, festival_voices=4, val_espeak_voices=6,
            val_flite_voices=1, epochs=8, ctc_strings=2000, ctc_val_strings=60, ctc_hidden=48, ctc_layers=1,
            ctc_epochs=25, beam=4, human_train_copies=10, ensemble=1, mfcc_members=0)
# The demo's CTC model: on 300 strings x 8 epochs (until session 16) it never got past emitting blanks (WER
# 100%); on 2,000 x 25 it reads the held-out voices' strings, in a few minutes (docs/speech.md, session 16).


def demo(run_dir: Path) -> dict:
    """About four minutes on 2 cores (3.6 measured in session 16, synthesis cached; the CTC model 2.4 of them): 38
    training voice settings, a small bidirectional LSTM."""
    config = Config(**DEMO)
    run_dir = new_run_dir("speech", run_dir)
    write_config(run_dir, config)
    metrics = train(config, run_dir, verbose=0)
    write_metrics(run_dir, metrics)
    shown = {k: metrics[k] for k in ("human_accuracy", "synthetic_accuracy", "digit_string_wer", "total_minutes")}
    print_table([{"figure": k, "value": v} for k, v in shown.items()])
    return shown


def register(subparsers) -> None:
    from rnnlab.cli import add_config_arguments, add_run_arguments

    p = subparsers.add_parser("speech", help="spoken digits, letters and NATO words: train on synthetic voices, "
                                             "test on human ones", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="speech_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("train", help="synthesise (cached), train the word classifier and the digit-string CTC model",
                       description="Train on espeak-ng/flite/festival voices, validate on held-out voices, test on 115 human "
                                   "recordings; digit strings with a bidirectional LSTM + CTC.",
                       epilog="Example: rnnlab speech train --json   |   rnnlab speech train --cell gru --epochs 8")
    add_config_arguments(t, Config)
    for action in t._actions:  # show the cell and front-end choices in --help
        if "--cell" in action.option_strings:
            action.choices, action.metavar = sorted(CELLS), None
        if {"--front", "--ctc-front"} & set(action.option_strings):
            action.choices, action.metavar = sd.FRONTS, None
    add_run_arguments(t, json_help='print only {"human_accuracy", "synthetic_accuracy", "digit_string_wer", ...}')
    t.set_defaults(func=_train)
    e = sub.add_parser("eval", help="score a trained run and the pocketsphinx peer on the human test set",
                       epilog="Example: rnnlab speech eval --json   (default: the newest run under runs/speech)")
    e.add_argument("--run-dir", default=None, help="a 'speech train' run folder (default: the newest)")
    e.add_argument("--no-peer", action="store_true", help="skip pocketsphinx")
    e.add_argument("--trim-db", type=float, default=None, metavar="DB",
                   help="cut the human recordings' leading/trailing audio this far below the peak "
                        "(default: the run's own --trim-db)")
    e.add_argument("--json", action="store_true", help='print only {"human_accuracy", "synthetic_accuracy", '
                                                       '"digit_string_wer", "pocketsphinx_human_accuracy", ...}')
    e.set_defaults(func=_eval)
    r = sub.add_parser("recognize", help="the word spoken in an audio file (any rate, mono or stereo)",
                       epilog="Example: rnnlab speech recognize hello.wav   |   rnnlab speech recognize pin.wav --digits")
    r.add_argument("file", help="wav / flac / ogg file holding one word (or, with --digits, a digit string)")
    r.add_argument("--run-dir", default=None, help="a 'speech train' run folder (default: the newest)")
    r.add_argument("--digits", action="store_true", help="read a connected digit string with the CTC model")
    r.add_argument("--json", action="store_true", help="print the answer as JSON")
    r.set_defaults(func=_recognize)


def _train(args) -> int:
    from rnnlab.cli import start_run

    config, run_dir = start_run(Config, args, "speech", DRY_RUN)
    metrics = train(config, run_dir, verbose=0 if args.json else 1, resume=args.resume)
    write_metrics(run_dir, metrics)
    _report(metrics, run_dir, args.json)
    return 0


def _report(metrics: dict, run_dir: Path, as_json: bool) -> None:
    """``--json``: the metrics (without the list of missed recordings); else the table and the folder."""
    if as_json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "human_errors"}))
        return
    _print(metrics)
    print(f"\nrun folder: {run_dir}\nconfusion matrices: {run_dir / 'confusion_human.png'}, "
          f"{run_dir / 'confusion_synthetic.png'} (held-out voices)")


def _print(metrics: dict) -> None:
    keys = ("human_accuracy", "human_accuracy_digits", "human_accuracy_letters", "human_accuracy_nato",
            "synthetic_accuracy", *(f"synthetic_accuracy_{e}" for e in sd.SYNTHESISERS), "digit_string_wer",
            "pocketsphinx_human_accuracy")
    print_table([{"figure": k, "value": metrics[k]} for k in keys if k in metrics])
    if metrics.get("human_errors"):
        print("\nhuman recordings missed:\n  " + "\n  ".join(metrics["human_errors"]))


def _eval(args) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else latest_run()
    metrics = evaluate(run_dir, peer=not args.no_peer, verbose=0 if args.json else 1, trim_db=args.trim_db)
    from rnnlab.runs import write_json

    write_json(run_dir / "eval.json", metrics)
    _report(metrics, run_dir, args.json)
    return 0


def _recognize(args) -> int:
    answer = recognize(args.file, Path(args.run_dir) if args.run_dir else None, args.digits)
    if args.json:
        print(json.dumps(answer))
    elif "digits" in answer:
        print(answer["digits"])
    else:
        alt = ", ".join(f"{w} {p:.2f}" for w, p in answer["alternatives"].items())
        print(f"{answer['word']}  (probability {answer['probability']:.2f}; next: {alt})")
    return 0
