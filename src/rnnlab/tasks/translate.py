"""``rnnlab translate``: an attention encoder-decoder trained on human translations of interface strings.

Data -> tokens -> model -> fit -> decode -> score against baselines, top to bottom:

* data: English -> French / German / Chinese pairs from the ``.po`` catalogs of Django, Wagtail,
  Sphinx and Plone (:mod:`rnnlab.data.translation`), or ``--tsv PATH``; placeholders masked; split
  by source string;
* memory: the training pairs as a translation memory; with ``--fuzzy`` each source is fed
  to the encoder together with the translation of its most similar training source, when it is
  at least ``--fuzzy-threshold`` similar (neural fuzzy repair, Bulte & Tezcan 2019): the network
  learns to edit a near match rather than translate from nothing, which is how human translators
  work through these catalogs;
* tokens: sentencepiece trained on the training split only (BPE for English, French and German;
  characters for Chinese, which has no spaces to split words at and whose ~2k characters in this
  data are already a compact vocabulary);
* model: :class:`rnnlab.seq2seq.Seq2Seq` (bidirectional encoder, attention decoder), and the same
  network without attention as a baseline; label-smoothed cross-entropy, early stopping on
  validation loss, through the one :class:`~rnnlab.train.Trainer`; the saved weights are the mean
  of the last three epochs' (checkpoint averaging, ``--average-last``); two such models with
  different seeds decode as one (:class:`~rnnlab.seq2seq.Ensemble`, ``--ensemble``);
* decode: batched beam search with a length penalty, and greedy; every source placeholder must be
  produced before the end (constrained decoding, ``--constrain-placeholders``); no hypothesis
  repeats one of its own 6-grams of pieces (``--no-repeat-ngram``); placeholders restored;
* score: BLEU and chrF (sacrebleu) against copy-the-source and nearest-neighbour retrieval
  (character 3-gram TF-IDF) baselines on the same test set; an attention heatmap PNG.
"""
from __future__ import annotations

import dataclasses
import io
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnlab.data.translation import (PAIRS, Pair, Split, add_training_pairs, extra_catalog_dir, extra_pairs, load_pairs,
                                     mask, split_pairs, unmask)
from rnnlab.errors import RnnlabError
from rnnlab.metrics.translation import bleu, chrf, placeholders_kept
from rnnlab.runs import print_table, save_figure, write_config, write_json, write_metrics
from rnnlab.seq2seq import (BOS, EOS, PAD, Constraints, Ensemble, Seq2Seq, beam_search, greedy,
                            smoothed_cross_entropy)
from rnnlab.train import EarlyStopping, Trainer, seed_everything
from rnnlab.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from rnnlab.train.data import BucketedBatches

MAX_PLACEHOLDERS = 10


@dataclass
class Config:
    pair: str = "en-fr"
    tsv: str | None = None          # a user's own 'source<TAB>target' file instead of --pair
    cell: str = "lstm"
    attention: str = "additive"     # additive (Bahdanau), dot or general (Luong)
    embedding: int = 128
    hidden: int = 128               # per encoder direction; the decoder has 2x
    dropout: float = 0.3
    label_smoothing: float = 0.1
    src_vocab: int = 2000
    tgt_vocab: int = 2000           # ignored for Chinese (characters)
    max_len: int = 64               # tokens per sentence; longer ones are cut, and the cut is reported
    epochs: int = 40
    patience: int = 3
    average_last: int = 3           # final weights: the mean of the last N epochs' weights (1: the best epoch's)
    ensemble: int = 2               # attention models trained with seeds seed..seed+N-1, decoded as one
    batch_size: int = 64
    learning_rate: float = 3e-3
    beam: int = 5
    length_penalty: float = 1.0
    no_repeat_ngram: int = 6        # decoding never repeats a 6-gram of pieces it already produced (0: off)
    no_attention_baseline: bool = True
    fuzzy: bool = False             # feed the translation of the nearest training source too (fuzzy repair)
    fuzzy_threshold: float = 0.6    # ... only when its similarity (3-gram TF-IDF cosine) is at least this
    copy: bool = False              # pointer-generator: the decoder may copy source / hint pieces it points at
    constrain_placeholders: bool = True  # decoding must produce every source placeholder before ending, never <unk>
    extra_catalogs: bool = True     # also train on the EXTRA_CATALOGS wheels' pairs (never validated or tested on)
    max_pairs: int = 0              # use only the first N training pairs (0: all)
    max_test: int = 0               # score only the first N test pairs (0: all; for smoke tests)
    seed: int = 0


# -- tokens ----------------------------------------------------------------------------------------

class Tokenizer:
    """A sentencepiece model trained on one side of the training split (``<phK>`` kept whole)."""

    def __init__(self, proto: bytes):
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int, characters: bool = False) -> "Tokenizer":
        import sentencepiece as spm

        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buffer, vocab_size=vocab_size,
            model_type="char" if characters else "bpe", character_coverage=0.9995 if characters else 1.0,
            user_defined_symbols=[f"<ph{k}>" for k in range(MAX_PLACEHOLDERS)],
            pad_id=PAD, unk_id=1, bos_id=BOS, eos_id=EOS, hard_vocab_limit=False, minloglevel=2,
            num_threads=1)  # one thread: the same pieces on every run
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)


def build_tokenizers(train: list[Pair], config: Config, target_lang: str) -> tuple[Tokenizer, Tokenizer]:
    src = Tokenizer.train([p.source for p in train], config.src_vocab)
    tgt = Tokenizer.train([p.target for p in train], config.tgt_vocab, characters=target_lang.startswith("zh"))
    return src, tgt


def encode_sources(tok: Tokenizer, texts: list[str], max_len: int, hints: list[str] | None = None,
                   hint_tok: Tokenizer | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Padded source ids ``(N, S)`` ending in EOS, their lengths, and how many were cut to ``max_len``.

    With ``hints`` (fuzzy repair) a row is ``source SEP hint EOS``: the hint's target-language pieces
    get ids after the source vocabulary (``len(tok) + id``) and SEP the last id, so one embedding
    table holds both languages (see :func:`source_vocab`). A ``None`` hint (no close match) leaves
    the row ``source EOS``."""
    rows, cut = [], 0
    sep = len(tok) + len(hint_tok) if hints is not None else None
    for i, text in enumerate(texts):
        ids = tok.encode(text)
        if len(ids) > max_len - 1:
            ids, cut = ids[:max_len - 1], cut + 1
        if hints is not None and hints[i] is not None:
            ids = ids + [sep] + [len(tok) + t for t in hint_tok.encode(hints[i])[:max_len - 1]]
        rows.append(ids + [EOS])
    return _pad(rows), torch.tensor([len(r) for r in rows]), cut


def source_vocab(config: Config, src: Tokenizer, tgt: Tokenizer) -> int:
    """Size of the encoder's embedding table: source pieces, plus target pieces and SEP with fuzzy repair."""
    return len(src) + (len(tgt) + 1 if config.fuzzy else 0)


def encode_targets(tok: Tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs ``BOS y`` and outputs ``y EOS``, padded."""
    rows = [tok.encode(t)[:max_len - 1] for t in texts]
    return _pad([[BOS] + r for r in rows]), _pad([r + [EOS] for r in rows])


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


# -- model -----------------------------------------------------------------------------------------

def build_model(config: Config, src_vocab: int, tgt_vocab: int, attention: str | None = None,
                copy_to: torch.Tensor | None = None) -> Seq2Seq:
    """The network for ``config``; with ``--copy`` an attention model copies through ``copy_to``
    (see :func:`copy_map`; left out, a placeholder of the right size that loading a checkpoint fills)."""
    attention = attention or config.attention
    copies = config.copy and attention != "none"  # the no-attention baseline has nothing to point with
    if copies and copy_to is None:
        copy_to = torch.full((src_vocab,), -1, dtype=torch.long)
    return Seq2Seq(src_vocab, tgt_vocab, config.cell, config.embedding, config.hidden, attention, config.dropout,
                   copy_to if copies else None)


def copy_map(config: Config, src: Tokenizer, tgt: Tokenizer) -> torch.Tensor:
    """For each encoder id, the target id a copy of it produces (-1: not copyable): a source piece
    whose text is also a target piece (placeholders, names, numbers, pieces of English left as they
    are) and, with fuzzy repair, every hint piece (they are target pieces already)."""
    table = torch.full((source_vocab(config, src, tgt),), -1, dtype=torch.long)
    special = {PAD, src.sp.unk_id(), BOS, EOS}
    for i in range(len(src)):
        j = tgt.sp.piece_to_id(src.sp.id_to_piece(i))
        if i not in special and j not in special:
            table[i] = j
    if config.fuzzy:  # hint ids are len(src) + target id; SEP, the last id, stays -1
        hint = torch.arange(len(tgt))
        hint[[PAD, tgt.sp.unk_id(), BOS, EOS]] = -1
        table[len(src):len(src) + len(tgt)] = hint
    return table


def fit_model(model: Seq2Seq, config: Config, data: dict, run_dir: Path, verbose: int, resume: bool = False) -> dict:
    """Train with label smoothing and early stopping on validation loss; the best weights are kept.
    ``resume`` continues from ``run_dir/checkpoints/last.safetensors`` when there is one."""
    stopper = EarlyStopping(patience=config.patience, restore_best_weights=True)
    trainer = Trainer(model, smoothed_cross_entropy(config.label_smoothing), learning_rate=config.learning_rate,
                      clipnorm=1.0, callbacks=[stopper], seed=config.seed, run_dir=run_dir,
                      config=dataclasses.asdict(config), keep_last=max(3, config.average_last))
    batches = {part: BucketedBatches(inputs, target, inputs[1] + (target != PAD).sum(1), config.batch_size,
                                     seed=config.seed, shuffle=part == "train")
               for part, (inputs, target) in data.items()}  # similar lengths together: little padding
    start = time.perf_counter()
    history = trainer.fit(batches["train"], epochs=config.epochs, batch_size=config.batch_size,
                          validation_data=batches["val"], verbose=verbose,
                          resume=resume and (run_dir / "checkpoints" / "last.safetensors").is_file())
    info = {"epochs": len(history.history["loss"]), "best_val_loss": min(history.history["val_loss"]),
            "train_s": time.perf_counter() - start}
    done = info["epochs"]  # this run's own last epochs (not a stale file from an earlier run in the folder)
    last = [run_dir / "checkpoints" / f"epoch-{e:04d}.safetensors" for e in range(done - config.average_last + 1, done + 1)]
    last = [p for p in last if p.is_file()]
    if config.average_last > 1 and len(last) > 1:
        model.load_state_dict(average_weights(last))
        info["averaged"] = [p.stem for p in last]
    return info


def average_weights(paths: list[Path]) -> dict:
    """The element-wise mean of the model weights in these Trainer checkpoints (checkpoint averaging,
    Vaswani et al. 2017): the last few epochs of a run that has stopped improving sit around a minimum,
    and their mean generalises better than any one of them (+0.7 to +1.6 BLEU / chrF on validation here,
    see docs/translation.md)."""
    if not paths:
        raise RnnlabError("checkpoint averaging needs at least one checkpoint, got none")
    states = [load_checkpoint(p)["model"] for p in paths]
    return {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}


class Memory:
    """The training pairs as a translation memory: for a sentence, the training pair whose source is
    most similar (cosine of character 3-gram TF-IDF). The retrieval baseline returns its
    translation; fuzzy repair feeds that translation to the network next to the source."""

    def __init__(self, pairs: list[Pair]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not pairs:
            raise RnnlabError("the translation memory needs at least one training pair, got none")
        self.pairs = pairs
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=True)
        self.matrix = self.vectorizer.fit_transform([p.source for p in pairs])

    def nearest(self, sources: list[str], exclude_same_source: bool = False, chunk: int = 1024) -> np.ndarray:
        """Index of the most similar training pair for each source. ``exclude_same_source`` (for the
        training pairs themselves) skips pairs with the identical source, as a test sentence's own
        source is never in the memory."""
        return self.matches(sources, exclude_same_source, chunk)[0]

    def matches(self, sources: list[str], exclude_same_source: bool = False,
                chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """``(index, similarity)`` of the most similar training pair for each source (see :meth:`nearest`)."""
        best, score = [np.zeros(0, dtype=int)], [np.zeros(0)]
        for start in range(0, len(sources), chunk):
            part = sources[start:start + chunk]
            sim = (self.vectorizer.transform(part) @ self.matrix.T).toarray()
            if exclude_same_source:
                index = self._by_source()
                for i, text in enumerate(part):
                    sim[i, index.get(text, [])] = -1.0
            best.append(sim.argmax(axis=1))
            score.append(sim[np.arange(len(part)), best[-1]])
        return np.concatenate(best), np.concatenate(score)

    def hints(self, sources: list[str], exclude_same_source: bool = False, threshold: float = 0.0) -> list[str | None]:
        """The nearest training translation of each source, or ``None`` where it is less similar than
        ``threshold``: a distant match is noise the network would have to learn to ignore (Bulte &
        Tezcan 2019 feed only matches above a fuzzy-match score)."""
        index, sim = self.matches(sources, exclude_same_source)
        return [self.pairs[j].target if s >= threshold else None for j, s in zip(index, sim)]

    def _by_source(self) -> dict[str, list[int]]:
        if not hasattr(self, "_index"):
            self._index: dict[str, list[int]] = {}
            for i, p in enumerate(self.pairs):
                self._index.setdefault(p.source, []).append(i)
        return self._index

    def to_tensor(self) -> torch.Tensor:
        blob = json.dumps([[p.source, p.target] for p in self.pairs], ensure_ascii=False).encode("utf-8")
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> "Memory":
        rows = json.loads(bytes(tensor.numpy().tobytes()).decode("utf-8"))
        return cls([Pair(source, target, []) for source, target in rows])


def placeholder_constraints(tgt: Tokenizer, pairs: list[Pair]) -> Constraints:
    """Each sentence must produce its own ``<phK>`` pieces and none that its source does not have, nor
    ``<unk>``: it stands for a character too rare for the tokenizer, and reaches the reader as "⁇"."""
    ids = [tgt.sp.piece_to_id(f"<ph{k}>") for k in range(MAX_PLACEHOLDERS)]
    return Constraints.from_lists([ids[:len(p.placeholders)] for p in pairs],
                                  [ids[len(p.placeholders):] + [tgt.sp.unk_id()] for p in pairs], len(tgt))


class Translator:
    """A trained model with its tokenizers (and, for fuzzy repair, its translation memory):
    ``translate(pairs) -> texts`` with placeholders restored."""

    def __init__(self, model: Seq2Seq | Ensemble, src: Tokenizer, tgt: Tokenizer, config: Config,
                 memory: Memory | None = None):
        if config.fuzzy and memory is None:
            raise RnnlabError("a fuzzy-repair model needs its translation memory (the training pairs)")
        self.model, self.src, self.tgt, self.config, self.memory = model, src, tgt, config, memory

    def encode(self, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Encoder input for these sentences: ``source`` or, with fuzzy repair, ``source SEP hint``."""
        sources = [p.source for p in pairs]
        if not self.config.fuzzy:
            return encode_sources(self.src, sources, self.config.max_len)
        hints = self.memory.hints(sources, threshold=self.config.fuzzy_threshold)
        return encode_sources(self.src, sources, self.config.max_len, hints, self.tgt)

    def source_pieces(self, pair: Pair) -> list[str]:
        """Labels of the encoder positions of one sentence (for the attention heatmap)."""
        ids = self.encode([pair])[0][0].tolist()
        n_src = len(self.src)
        return ["</s>" if i == EOS else "‖" if i == n_src + len(self.tgt) else
                self.src.sp.id_to_piece(i) if i < n_src else "·" + self.tgt.sp.id_to_piece(i - n_src) for i in ids]

    def translate(self, pairs: list[Pair], beam: int | None = None, batch_size: int = 64) -> list[str]:
        """Beam search (``beam`` 0: greedy), batched, placeholders put back."""
        beam = self.config.beam if beam is None else beam
        outputs = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            src, src_len, _ = self.encode(chunk)
            limit = int(src_len.max()) * 2 + 10
            constraints = placeholder_constraints(self.tgt, chunk) if self.config.constrain_placeholders else None
            if beam == 0:  # greedy
                ids = greedy(self.model, src, src_len, limit, constraints, self.config.no_repeat_ngram)
            else:
                ids = beam_search(self.model, src, src_len, beam, limit, self.config.length_penalty,
                                  constraints=constraints, no_repeat_ngram=self.config.no_repeat_ngram)
            outputs += [unmask(self.tgt.decode(seq), p.placeholders) for seq, p in zip(ids, chunk)]
        return outputs

    def save(self, path: Path) -> None:
        save_checkpoint(path, {
            "model": self.model.state_dict(), "config": dataclasses.asdict(self.config),
            "attention": self.model.attention.kind,
            "src_tokenizer": torch.frombuffer(bytearray(self.src.proto), dtype=torch.uint8),
            "tgt_tokenizer": torch.frombuffer(bytearray(self.tgt.proto), dtype=torch.uint8),
            **({"memory": self.memory.to_tensor()} if self.memory is not None else {})})

    @classmethod
    def load(cls, path: str | Path) -> "Translator":
        path = Path(path)
        if not path.is_file():
            raise RnnlabError(f"--checkpoint expects a file written by 'rnnlab translate train', got {str(path)!r} (not a file)")
        state = load_checkpoint(path)
        if "src_tokenizer" not in state or "config" not in state:
            raise RnnlabError(f"{path} is not a 'rnnlab translate' checkpoint (no tokenizers in it)")
        names = {f.name for f in dataclasses.fields(Config)}
        config = Config(**{k: v for k, v in state["config"].items() if k in names})
        src = Tokenizer(bytes(state["src_tokenizer"].numpy().tobytes()))
        tgt = Tokenizer(bytes(state["tgt_tokenizer"].numpy().tobytes()))
        if config.fuzzy and "memory" not in state:
            raise RnnlabError(f"{path} is a fuzzy-repair model without its translation memory (file damaged?)")
        members = {k.split(".")[1] for k in state["model"] if k.startswith("members.")}
        models = [build_model(config, source_vocab(config, src, tgt), len(tgt), state.get("attention"))
                  for _ in range(max(1, len(members)))]
        model = models[0] if len(models) == 1 else Ensemble(models)
        load_model_weights(model, state["model"], path)
        model.eval()
        return cls(model, src, tgt, config, Memory.from_tensor(state["memory"]) if config.fuzzy else None)


# -- baselines -------------------------------------------------------------------------------------

def copy_baseline(test: list[Pair]) -> list[str]:
    """The source itself: what an untranslated interface shows."""
    return [unmask(p.source, p.placeholders) for p in test]


def retrieval_baseline(memory: Memory, test: list[Pair]) -> list[str]:
    """The translation of the most similar training source (cosine of character 3-gram TF-IDF)."""
    return [unmask(memory.pairs[j].target, p.placeholders) for j, p in zip(memory.nearest([p.source for p in test]), test)]


# -- the run ---------------------------------------------------------------------------------------

def prepare(config: Config) -> tuple[str, Split]:
    """The split; with ``extra_catalogs`` its training set also holds the extra catalogs' pairs (after the
    four packages' own, so ``max_pairs`` keeps those first)."""
    name, pairs = load_pairs(None if config.tsv else config.pair, config.tsv)
    split = split_pairs(pairs)
    if config.extra_catalogs and not config.tsv:
        extra = extra_pairs(target_language(config))
        if not extra:
            print(f"note: no extra training catalogs in {extra_catalog_dir()} ('make install' puts them there); "
                  f"training on the four packages' pairs only", file=sys.stderr)
        split = add_training_pairs(split, extra)
    if config.max_pairs or config.max_test:
        split = dataclasses.replace(split, train=split.train[:config.max_pairs or None],
                                    test=split.test[:config.max_test or None])
    return name, split


def target_language(config: Config) -> str:
    return "xx" if config.tsv else config.pair.split("-")[1]


def train(config: Config, run_dir: Path, verbose: int = 1, resume: bool = False) -> dict:
    """Train the attention model and the no-attention baseline; write both checkpoints.

    With ``resume``, a model whose final checkpoint exists is kept and one that was interrupted
    continues from its last checkpoint (the tokenizers are retrained identically: one thread)."""
    if not 0.0 <= config.fuzzy_threshold <= 1.0:
        raise RnnlabError(f"--fuzzy-threshold is a cosine similarity in [0, 1], got {config.fuzzy_threshold}")
    if config.ensemble < 1:
        raise RnnlabError(f"--ensemble is a number of models, at least 1, got {config.ensemble}")
    name, split = prepare(config)
    seed_everything(config.seed)
    src_tok, tgt_tok = build_tokenizers(split.train, config, target_language(config))
    memory = Memory(split.train) if config.fuzzy else None
    data = {}
    cut = 0
    for part in ("train", "val"):
        pairs = getattr(split, part)
        sources = [p.source for p in pairs]
        # a training pair's hint is its nearest *other* source, as a test sentence's would be
        hints = memory.hints(sources, part == "train", config.fuzzy_threshold) if memory else None
        src, src_len, n_cut = encode_sources(src_tok, sources, config.max_len, hints, tgt_tok if memory else None)
        tgt_in, tgt_out = encode_targets(tgt_tok, [p.target for p in pairs], config.max_len)
        data[part] = ((src, src_len, tgt_in), tgt_out)
        cut += n_cut
    if cut:
        print(f"note: {cut} training/validation sources longer than max_len={config.max_len} tokens were cut",
              file=sys.stderr)
    kinds = [config.attention] + (["none"] if config.no_attention_baseline else [])
    table = copy_map(config, src_tok, tgt_tok) if config.copy else None  # one table for every model
    info = {"pair": name, "train_pairs": len(split.train), "val_pairs": len(split.val), "test_pairs": len(split.test),
            "src_vocab": len(src_tok), "tgt_vocab": len(tgt_tok)}
    for kind in kinds:
        label = "attention" if kind != "none" else "no_attention"
        if resume and (run_dir / f"{label}.safetensors").is_file():
            _trained_on_these_pieces(run_dir / f"{label}.safetensors", src_tok, tgt_tok)
            info[label] = {"train_s": 0.0, "resumed": "already trained"}
            continue
        count = config.ensemble if kind != "none" else 1  # the baseline stays one model; see bleu_single
        models = []
        for k in range(count):
            name_k = label if k == 0 else f"{label}-{k + 1}"
            done = run_dir / f"{label}-member-{k + 1}.safetensors"  # a finished member, kept for --resume
            if resume and count > 1 and done.is_file():
                models.append(_trained_on_these_pieces(done, src_tok, tgt_tok).model)
                info[name_k] = {"train_s": 0.0, "resumed": "already trained"}
                continue
            member_config = dataclasses.replace(config, seed=config.seed + k)
            seed_everything(member_config.seed)
            model = build_model(config, source_vocab(config, src_tok, tgt_tok), len(tgt_tok), kind, table)
            info[name_k] = fit_model(model, member_config, data, run_dir / name_k, verbose, resume)
            if count > 1:
                Translator(model, src_tok, tgt_tok, member_config, memory).save(done)
            models.append(model)
        model = models[0] if count == 1 else Ensemble(models)
        Translator(model, src_tok, tgt_tok, config, memory).save(run_dir / f"{label}.safetensors")
    write_json(run_dir / "train.json", info)
    return info


def _trained_on_these_pieces(path: Path, src: Tokenizer, tgt: Tokenizer) -> "Translator":
    """The finished model that ``--resume`` reuses, refused if its tokenizers are not this run's: its ids
    would mean other pieces (other data or settings), and an ensemble would mix two vocabularies."""
    done = Translator.load(path)
    if (done.src.proto, done.tgt.proto) != (src.proto, tgt.proto):
        raise RnnlabError(f"{path} was trained on other pieces than this run's tokenizers (other data or "
                          f"settings); remove it or train in a new --run-dir")
    return done


DECODING = ("beam", "length_penalty", "no_repeat_ngram")  # settings that ``eval`` may change on a trained run


def load_for_decoding(path: Path, config: Config) -> Translator:
    """A trained translator decoding with ``config``'s :data:`DECODING` settings (not necessarily the
    ones it was trained with: they do not touch the weights)."""
    translator = Translator.load(path)
    translator.config = dataclasses.replace(translator.config, **{k: getattr(config, k) for k in DECODING})
    return translator


def evaluate(config: Config, run_dir: Path) -> dict:
    """Scores of the trained models and the baselines on the test split (the ``--json`` of eval),
    decoding with ``config``'s beam, length penalty and n-gram blocking."""
    name, split = prepare(config)
    lang = target_language(config)
    refs = [unmask(p.target, p.placeholders) for p in split.test]
    model = load_for_decoding(run_dir / "attention.safetensors", config)
    beam_out = model.translate(split.test)
    greedy_out = model.translate(split.test, beam=0)
    kept, with_ph = placeholders_kept(beam_out, [p.placeholders for p in split.test])
    metrics = {"pair": name, "bleu": bleu(beam_out, refs, lang), "chrf": chrf(beam_out, refs),
               "bleu_greedy": bleu(greedy_out, refs, lang), "chrf_greedy": chrf(greedy_out, refs)}
    if isinstance(model.model, Ensemble):  # its first member alone: the like-for-like peer of the baseline
        single = Translator(model.model.members[0], model.src, model.tgt, model.config, model.memory)
        one = single.translate(split.test)
        metrics.update({"bleu_single": bleu(one, refs, lang), "chrf_single": chrf(one, refs),
                        "ensemble": len(model.model.members)})
    if (run_dir / "no_attention.safetensors").is_file():
        plain = load_for_decoding(run_dir / "no_attention.safetensors", config).translate(split.test)
        metrics.update({"bleu_no_attention": bleu(plain, refs, lang), "chrf_no_attention": chrf(plain, refs)})
    memory = Memory(split.train)
    retrieved, copied = retrieval_baseline(memory, split.test), copy_baseline(split.test)
    similarity = memory.matches([p.source for p in split.test])[1]
    metrics["by_similarity"] = by_similarity(similarity, {"rnnlab": beam_out, "retrieval": retrieved}, refs, lang)
    metrics.update({"bleu_retrieval": bleu(retrieved, refs, lang), "chrf_retrieval": chrf(retrieved, refs),
                    "bleu_copy": bleu(copied, refs, lang), "chrf_copy": chrf(copied, refs),
                    "placeholders_kept": kept / with_ph if with_ph else None, "placeholder_sentences": with_ph,
                    "test_pairs": len(split.test), **{k: getattr(model.config, k) for k in DECODING}})
    samples = [{"source": unmask(p.source, p.placeholders), "reference": r, "rnnlab": o, "retrieval": t}
               for p, r, o, t in list(zip(split.test, refs, beam_out, retrieved))[:20]]
    write_json(run_dir / "samples.json", samples)
    plot_attention(model, _heatmap_example(split.test), run_dir / "attention.png")
    return metrics


SIMILARITY_BINS = (0.0, 0.5, 0.7, 0.85)  # lower edges of the groups of :func:`by_similarity`


def by_similarity(similarity: np.ndarray, systems: dict[str, list[str]], refs: list[str], lang: str) -> list[dict]:
    """BLEU / chrF of each system on the test sentences grouped by how similar their nearest training
    source is (the translation memory's match): where the network wins and where the memory does."""
    edges = list(SIMILARITY_BINS) + [np.inf]
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        pick = [i for i, x in enumerate(similarity) if low <= x < high]
        if not pick:
            continue
        row = {"similarity": f"{low:.2f}-{min(high, 1.0):.2f}", "sentences": len(pick)}
        for name, out in systems.items():
            row[f"bleu_{name}"] = bleu([out[i] for i in pick], [refs[i] for i in pick], lang)
            row[f"chrf_{name}"] = chrf([out[i] for i in pick], [refs[i] for i in pick])
        rows.append(row)
    return rows


def _heatmap_example(test: list[Pair]) -> Pair:
    """A test sentence of 5-12 source words to draw (the first one), else the first sentence."""
    return next((p for p in test if 5 <= len(p.source.split()) <= 12), test[0])


def plot_attention(translator: Translator, pair: Pair, path: Path) -> None:
    """The attention weights of the beam-search output for one sentence, as a heatmap PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src_pieces = translator.source_pieces(pair)
    src, src_len, _ = translator.encode([pair])
    constraints = placeholder_constraints(translator.tgt, [pair]) if translator.config.constrain_placeholders else None
    out = beam_search(translator.model, src, src_len, translator.config.beam, 2 * len(src_pieces) + 10,
                      translator.config.length_penalty, True, constraints, translator.config.no_repeat_ngram)
    ids, att = out[0][0], out[1][0]
    tgt_pieces = [translator.tgt.sp.id_to_piece(i) for i in ids] + ["</s>"]
    grid = att[:len(tgt_pieces), :len(src_pieces)].numpy()
    # Chinese pieces need a CJK font: matplotlib falls back per glyph along this list (Debian's
    # fonts-wqy-zenhei, installed by make install); without one the labels show boxes, not a crash.
    import logging

    from matplotlib import font_manager

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # "using weight 500" chatter

    families = ["DejaVu Sans"] + [f for f in ("WenQuanYi Zen Hei", "Noto Sans CJK SC")
                                  if any(e.name == f for e in font_manager.fontManager.ttflist)]
    with matplotlib.rc_context({"font.family": families}):
        _draw_attention(plt, grid, src_pieces, tgt_pieces, translator.model.attention.kind, path)


def _draw_attention(plt, grid, src_pieces, tgt_pieces, kind: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(0.45 * len(src_pieces) + 2, 0.4 * len(tgt_pieces) + 1.5))
    ax.imshow(grid, cmap="Blues", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tgt_pieces)), tgt_pieces, fontsize=8)
    ax.set_xlabel("source (English pieces; after ‖ the nearest training translation, ·pieces)"
                  if "‖" in src_pieces else "source (English pieces)")
    ax.set_ylabel("output pieces")
    ax.set_title(f"attention ({kind})", fontsize=9)
    save_figure(fig, path)


def latest_run(pair: str) -> Path:
    runs = sorted(p.parent for p in Path("runs", "translate", pair).glob("*/attention.safetensors"))
    if not runs:
        raise RnnlabError(f"no trained {pair} model under runs/translate/{pair}/; run 'rnnlab translate train "
                          f"--pair {pair}' first or pass --run-dir")
    return runs[-1]


# -- command line ----------------------------------------------------------------------------------

DRY_RUN = dict(embedding=16, hidden=16, src_vocab=200, tgt_vocab=200, epochs=1, max_pairs=300, max_test=40, beam=2)
SMALL = dict(embedding=64, hidden=64, src_vocab=500, tgt_vocab=500, epochs=3, max_pairs=1500, beam=3, ensemble=1)


def demo(run_dir: Path) -> dict:
    """A small en-fr model (a few epochs on 1,500 pairs) scored against the baselines, with samples."""
    config = Config(**SMALL)
    write_config(run_dir, config)
    train(config, run_dir, verbose=0)
    metrics = evaluate(config, run_dir)
    write_metrics(run_dir, metrics)
    _print_samples(run_dir, 3)
    return metrics


def _print_samples(run_dir: Path, n: int) -> None:
    samples = json.loads((run_dir / "samples.json").read_text(encoding="utf-8"))
    for s in samples[:n]:
        print(f"  {s['source']}\n    -> {s['rnnlab']}\n    (reference: {s['reference']})")


def register(subparsers) -> None:
    from rnnlab.cli import add_config_arguments, add_run_arguments

    p = subparsers.add_parser("translate", help="attention encoder-decoder on human .po translations (en-fr, en-de, en-zh)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="translate_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("train", help="train the attention model and the no-attention baseline, then score them",
                       epilog="Example: rnnlab translate train --pair en-de --json")
    add_config_arguments(t, Config)
    add_run_arguments(t, json_help="print only the evaluation metrics as JSON")
    t.set_defaults(func=_train)
    e = sub.add_parser("eval", help="BLEU / chrF of a trained run and the baselines on the test split",
                       epilog="Example: rnnlab translate eval --pair en-fr --json")
    e.add_argument("--pair", default="en-fr", choices=PAIRS)
    e.add_argument("--run-dir", default=None, help="the run to score (default: the newest runs/translate/PAIR/*)")
    e.add_argument("--json", action="store_true", help="print only the metrics as JSON")
    for name, kind in (("beam", int), ("length_penalty", float), ("no_repeat_ngram", int)):
        e.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, metavar=name.upper(),
                       help="decode with this instead of the run's setting (config.json)")
    e.set_defaults(func=_eval)
    x = sub.add_parser("text", help="translate sentences with a trained checkpoint",
                       epilog='Example: rnnlab translate text --checkpoint runs/translate/en-fr/<run>/attention.safetensors '
                              '"Delete the selected items"')
    x.add_argument("--checkpoint", required=True, help="attention.safetensors of a 'translate train' run")
    x.add_argument("--beam", type=int, default=None, help="beam size (default: the model's; 0 = greedy)")
    x.add_argument("sentences", nargs="+", help="English text to translate")
    x.set_defaults(func=_text)


def _train(args) -> int:
    from rnnlab.cli import start_run

    config, run_dir = start_run(Config, args, lambda c: f"translate/{Path(c.tsv).stem if c.tsv else c.pair}", DRY_RUN)
    info = train(config, run_dir, verbose=0 if args.json else 1, resume=args.resume)
    metrics = evaluate(config, run_dir)
    metrics["train_minutes"] = sum(v["train_s"] for v in info.values() if isinstance(v, dict)) / 60  # every model
    write_metrics(run_dir, metrics)
    _report(metrics, run_dir, args.json)
    return 0


def _eval(args) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else latest_run(args.pair)
    saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    saved = saved.get("config", saved)  # runs.write_config nests the fields under "config"
    saved.setdefault("extra_catalogs", False)  # runs from before the field existed trained without them
    names = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in saved.items() if k in names})
    config = dataclasses.replace(config, **{k: getattr(args, k) for k in DECODING if getattr(args, k) is not None})
    metrics = evaluate(config, run_dir)
    write_metrics(run_dir, metrics)
    _report(metrics, run_dir, args.json)
    return 0


def _report(metrics: dict, run_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    rows = [{"system": s, "bleu": metrics.get(f"bleu{k}"), "chrf": metrics.get(f"chrf{k}")}
            for s, k in (("attention + beam", ""), ("attention + beam, one model", "_single"),
                         ("attention, greedy", "_greedy"), ("no attention", "_no_attention"),
                         ("retrieval (3-gram TF-IDF)", "_retrieval"), ("copy source", "_copy"))
            if metrics.get(f"bleu{k}") is not None]
    print_table(rows, ["system", "bleu", "chrf"], floatfmt=".1f")
    if metrics.get("by_similarity"):
        print("by similarity of the nearest training source (BLEU / chrF):")
        print_table(metrics["by_similarity"], list(metrics["by_similarity"][0]), floatfmt=".1f")
    if metrics.get("placeholders_kept") is not None:
        print(f"placeholders kept: {metrics['placeholders_kept']:.1%} of {metrics['placeholder_sentences']} sentences")
    _print_samples(run_dir, 5)
    print(f"run folder: {run_dir}")


def _text(args) -> int:
    translator = Translator.load(args.checkpoint)
    for sentence in args.sentences:
        sentence = " ".join(sentence.split())
        if not sentence:
            raise RnnlabError("nothing to translate: the input is empty")
        pair = mask(sentence, "")
        n_tokens = len(translator.src.encode(pair.source)) + 1
        if n_tokens > translator.config.max_len:
            print(f"warning: the input has {n_tokens} tokens; only the first {translator.config.max_len} "
                  f"are translated (the model's max_len)", file=sys.stderr)
        if len(pair.placeholders) > MAX_PLACEHOLDERS:
            raise RnnlabError(f"at most {MAX_PLACEHOLDERS} placeholders per sentence, got {len(pair.placeholders)}")
        print(translator.translate([pair], beam=args.beam)[0])
    return 0
