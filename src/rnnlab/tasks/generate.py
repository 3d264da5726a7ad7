"""``rnnlab generate``: a character-level language model that learns a text and writes more of it.

Data -> model -> fit -> evaluate against a baseline -> sample, top to bottom:

* data: Shakespeare's plays split by play (:mod:`rnnlab.data.text`), or ``--text PATH`` (any UTF-8);
* model: :class:`CharLM`, embedding -> stacked LSTM/GRU/RNN -> linear read-out (weights optionally tied);
* fit: the one :class:`~rnnlab.train.Trainer`, truncated backpropagation through time: the text is cut
  into ``batch_size`` parallel streams and each batch is the next ``bptt`` characters of every stream,
  so the hidden state is carried from one chunk to the next (detached: gradients stop at the chunk
  edge, the state does not); gradient clipping, per-batch cosine learning-rate decay, best-validation checkpoint;
* evaluate: nats per character, bits per character and perplexity from one function
  (:func:`rnnlab.metrics.text.text_metrics`), against an interpolated Kneser-Ney character n-gram
  model fitted on the same training text (:mod:`rnnlab.metrics.ngram`); with static weights, and by
  dynamic evaluation (the network keeps learning the play it reads, each chunk scored before it is
  learned from);
* sample: :func:`generate` reads the prompt once, then runs one step at a time carrying the state.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import rnnlab
from rnnlab.data.text import CharVocab, TextSplit, file_split, shakespeare_split
from rnnlab.errors import RnnlabError
from rnnlab.metrics.ngram import ngram_baseline
from rnnlab.metrics.text import text_metrics
from rnnlab.runs import print_table, save_figure, write_config, write_metrics
from rnnlab.train import CosineDecay, TimeLimit, Trainer, seed_everything

CELLS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}


@dataclass
class Config:
    cell: str = "lstm"
    hidden: int = 512
    layers: int = 1
    embedding: int = 64
    dropout: float = 0.0            # between stacked layers and before the read-out
    tie_weights: bool = False       # read-out shares the embedding matrix (needs embedding == hidden)
    bptt: int = 64                  # characters per truncated-BPTT chunk
    batch_size: int = 32            # parallel text streams (32 x 64 characters: as fast per character as
                                    # 64 x 128 on 2 cores, with 4x the updates)
    epochs: int = 4
    learning_rate: float = 2e-3     # cosine-decayed per batch to 5% of it over all epochs
    eval_streams: int = 8           # validation/test are read as this many streams, state carried
    adapt_lr: float = 0.1           # dynamic evaluation: an SGD step on each scored chunk (0 = static weights;
                                    # 0.1 chosen on the validation plays, see docs/generation.md)
    clipnorm: float = 1.0
    max_minutes: float = 28.0       # training stops after this (the epoch in progress is still scored)
    max_chars: int = 0              # use only the first N training characters (0: all)
    ngram_order: int = 7            # Kneser-Ney baseline order (0: skip the baseline)
    text: str | None = None         # a UTF-8 file instead of Shakespeare
    sample_length: int = 400
    seed: int = 0


# -- data ------------------------------------------------------------------------------------

def load_split(config: Config) -> TextSplit:
    return file_split(config.text) if config.text else shakespeare_split()


def tbptt_layout(ids: np.ndarray, batch_size: int, bptt: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-character targets laid out for truncated BPTT with a carried state.

    The text is cut into ``batch_size`` contiguous streams; row ``k * batch_size + s`` holds chunk
    ``k`` of stream ``s``. Read in order with batch ``batch_size`` (no shuffling), batch ``k`` continues
    every stream exactly where batch ``k - 1`` stopped. Characters that do not fill a whole chunk are
    dropped (fewer than ``batch_size * bptt``).
    """
    per_stream = (len(ids) - 1) // batch_size
    chunks = per_stream // bptt
    if chunks < 1:
        raise RnnlabError(f"text of {len(ids)} characters is too short for batch_size={batch_size} streams of "
                          f"bptt={bptt} characters (needs at least {batch_size * bptt + 1})")
    n = chunks * bptt
    ids = torch.as_tensor(ids, dtype=torch.long)
    x = ids[:batch_size * per_stream].view(batch_size, per_stream)[:, :n]
    y = ids[1:batch_size * per_stream + 1].view(batch_size, per_stream)[:, :n]

    def rows(a: Tensor) -> Tensor:  # (streams, chunks*bptt) -> (chunks*streams, bptt), chunk-major
        return a.view(batch_size, chunks, bptt).transpose(0, 1).reshape(chunks * batch_size, bptt)

    return rows(x), rows(y)


# -- model -----------------------------------------------------------------------------------

class CharLM(nn.Module):
    """Embedding -> ``layers`` x LSTM/GRU/RNN -> linear read-out over the vocabulary.

    ``step(ids, state) -> (logits, state)`` runs any number of steps from a given state (one call
    for a whole prompt, one per sampled character). ``forward(ids) -> logits`` is what the trainer
    calls: it starts from the state the previous batch left (truncated BPTT) and keeps the new one,
    detached; ``reset_states()`` (called by the trainer every epoch) starts the streams afresh.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding: int = 64, hidden: int = 512,
                 layers: int = 1, dropout: float = 0.0, tie_weights: bool = False):
        super().__init__()
        if cell not in CELLS:
            raise RnnlabError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if tie_weights and embedding != hidden:
            raise RnnlabError(f"tie_weights needs embedding == hidden (the read-out reuses the embedding "
                              f"matrix), got embedding={embedding}, hidden={hidden}")
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = CELLS[cell](embedding, hidden, num_layers=layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)
        if tie_weights:  # Press & Wolf 2017: input and output embeddings share one matrix
            self.head.weight = self.embed.weight
        self._state = None

    def step(self, ids: Tensor, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state

    def forward(self, ids: Tensor) -> Tensor:
        state = self._state
        if state is not None and _batch(state) != ids.shape[0]:
            state = None  # a different batch (e.g. a last short one) starts fresh
        logits, state = self.step(ids, state)
        self._state = _detach(state)
        return logits

    def reset_states(self) -> None:
        self._state = None


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _batch(state) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def build_model(config: Config, vocab_size: int) -> CharLM:
    return CharLM(vocab_size, config.cell, config.embedding, config.hidden, config.layers, config.dropout,
                  config.tie_weights)


# -- sampling ----------------------------------------------------------------------------------

@torch.no_grad()
def generate(model: CharLM, vocab: CharVocab, prompt: str, length: int = 500, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, prime: str = "") -> str:
    """``prompt`` followed by ``length`` sampled characters.

    ``prime`` (not returned) and the prompt are read once; each new character costs one step from
    the carried state. A model trained with the state carried across chunks almost never sees the
    zero state, so reading a little of its training text first (the checkpoint keeps it as
    ``prime``) puts it in the kind of state it knows, at a paragraph boundary.
    ``temperature`` 0 is greedy (argmax); ``top_k`` keeps the k likeliest characters, ``top_p`` the
    smallest set whose probability reaches p (nucleus sampling, Holtzman et al. 2020). The same
    seed gives the same text. Prompt characters the model never saw map to ``<unk>`` with a warning;
    ``<unk>`` itself is never sampled.
    """
    if not isinstance(length, int) or length < 0:
        raise RnnlabError(f"length must be a non-negative int, got {length!r}")
    if temperature < 0:
        raise RnnlabError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise RnnlabError(f"top_k must be >= 0 and top_p in (0, 1], got top_k={top_k}, top_p={top_p}")
    unknown = vocab.unknown_chars(prompt)
    if unknown:
        warnings.warn(f"the prompt has {len(unknown)} character(s) the model never saw, read as <unk>: "
                      f"{unknown[:10]!r}", stacklevel=2)
    start = (prime + prompt) or "\n"
    ids = torch.as_tensor(vocab.encode(start), dtype=torch.long).unsqueeze(0)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    logits, state = model.step(ids, None)
    last = logits[0, -1].float()
    out = []
    for _ in range(length):
        nxt = _pick(last, temperature, top_k, top_p, gen)
        out.append(nxt)
        logits, state = model.step(torch.tensor([[nxt]]), state)
        last = logits[0, -1].float()
    model.train(was_training)
    return prompt + vocab.decode(out)


def _pick(logits: Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator) -> int:
    logits = logits.clone()
    logits[0] = -math.inf  # never emit <unk>
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits[logits < kth] = -math.inf
    probs = torch.softmax(logits, -1)
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # keep until the mass before a token reaches p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


# -- training and evaluation ---------------------------------------------------------------------

def train(config: Config, run_dir: Path, verbose: int = 1, resume: bool = False) -> dict:
    """Fit the model, score it against the n-gram baseline, write checkpoints, plot and a sample."""
    split = load_split(config)
    train_text = split.train[:config.max_chars] if config.max_chars else split.train
    vocab = CharVocab.build(train_text)
    ids = {name: vocab.encode(text) for name, text in
           (("train", train_text), ("val", split.val), ("test", split.test))}
    seed_everything(config.seed)
    model = build_model(config, len(vocab))
    x, y = tbptt_layout(ids["train"], config.batch_size, config.bptt)
    steps = len(x) // config.batch_size
    limit = TimeLimit(config.max_minutes)
    decay = CosineDecay(config.learning_rate, steps * config.epochs, steps)
    trainer = Trainer(model, "cross_entropy", learning_rate=config.learning_rate, clipnorm=config.clipnorm,
                      callbacks=[decay, limit], seed=config.seed, run_dir=run_dir,
                      config={"task": dataclasses.asdict(config), "vocab": vocab.itos[1:],
                              "prime": priming_text(train_text)})
    val = tbptt_layout(ids["val"], config.batch_size, config.bptt)
    start = time.perf_counter()
    history = trainer.fit(x, y, epochs=config.epochs, batch_size=config.batch_size, validation_data=val,
                          shuffle=False, verbose=verbose, resume=resume)
    train_s = time.perf_counter() - start
    epochs_run = len(history.history["loss"])

    best = run_dir / "checkpoints" / "best.safetensors"
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    load_model_weights(model, load_checkpoint(best)["model"], best)
    static = {name: evaluate_text(trainer, ids[name], config) for name in ("val", "test")}
    scores = ({name: dynamic_evaluate(model, ids[name], config.bptt, config.adapt_lr,
                                      f"dynamic evaluation, {name}" if verbose == 1 else "") for name in ("val", "test")}
              if config.adapt_lr > 0 else static)
    metrics = {"test_bpc": scores["test"]["bpc"], "val_bpc": scores["val"]["bpc"],
               "evaluation": "dynamic" if config.adapt_lr > 0 else "static",
               "test_bpc_static": static["test"]["bpc"], "val_bpc_static": static["val"]["bpc"],
               "test_nats_per_char": scores["test"]["nats_per_char"],
               "test_perplexity": scores["test"]["perplexity"],
               "chars_per_s": limit.batches * config.batch_size * config.bptt / train_s,
               "train_minutes": train_s / 60, "epochs": epochs_run, "stopped_by_time_limit": limit.stopped_early,
               "vocab_size": len(vocab), "train_chars": len(ids["train"]), "source": split.source}
    if config.ngram_order:
        # With dynamic evaluation the network adapts to the text it reads; the fair n-gram does too (a cache).
        ngram = ngram_baseline(ids["train"], ids["val"], ids["test"], config.ngram_order, len(vocab),
                               adaptive=config.adapt_lr > 0)
        metrics.update({"ngram_order": config.ngram_order, "ngram_test_bpc": ngram["test"]["bpc"],
                        "ngram_val_bpc": ngram["val"]["bpc"]})
        if "adaptive" in ngram:
            metrics.update({"ngram_cache_test_bpc": ngram["adaptive"]["test"]["bpc"],
                            "ngram_cache_val_bpc": ngram["adaptive"]["val"]["bpc"],
                            "ngram_cache_weight": ngram["adaptive"]["cache_weight"]})
    sample = generate(model, vocab, _default_prompt(split), config.sample_length, temperature=0.8, seed=config.seed,
                      prime=priming_text(train_text))
    (run_dir / "sample.txt").write_text(sample, encoding="utf-8")
    plot_curves(history.history, metrics, run_dir / "bpc.png")
    return {**metrics, "sample": sample, "checkpoint": str(best)}


def priming_text(train_text: str, limit: int = 2000) -> str:
    """The start of the training text up to its last blank line within ``limit`` characters."""
    head = train_text[:limit]
    cut = head.rfind("\n\n")
    return head[:cut + 2] if cut > 0 else head


def evaluate_text(trainer: Trainer, ids: np.ndarray, config: Config) -> dict:
    """Nats, bits per character and perplexity of the model on ``ids``, state carried through the text.

    The text is read as ``eval_streams`` streams: each starts from the zero state, which costs the
    first characters of a stream a little, so few streams (8) keep that cost negligible."""
    batch = config.eval_streams
    while batch > 1 and (len(ids) - 1) // batch < config.bptt:
        batch //= 2  # a short text is read in fewer streams
    x, y = tbptt_layout(ids, batch, config.bptt)
    nats = trainer.evaluate(x, y, batch_size=batch)["loss"]
    return text_metrics(nats * y.numel(), y.numel())


def dynamic_evaluate(model: CharLM, ids: np.ndarray, bptt: int, lr: float, progress: str = "") -> dict:
    """Nats, bits per character and perplexity by dynamic evaluation; the model's weights are left as they were.

    Dynamic evaluation (Mikolov et al. 2010; Krause et al. 2018, "Dynamic Evaluation of Neural
    Sequence Models"): the text is read once, in order, as one stream with the state carried; each
    ``bptt``-character chunk is scored with the current weights and only then used for one SGD step
    (``lr``), so every character is predicted from the characters before it and nothing after it.
    A held-out play brings its own names and turns of phrase; the network learns them as it reads,
    the way the n-gram cannot. One stream, not several, because a step taken on one stream's chunk
    would carry text from later in the play into another stream's earlier prediction.
    ``progress``: a label for a progress bar on stderr (empty: none).
    """
    nats = chunk_nats_dynamic(model, ids, bptt, lr, progress)
    return text_metrics(float(nats.sum()), len(ids) - 1)


def chunk_nats_dynamic(model: CharLM, ids: np.ndarray, bptt: int, lr: float, progress: str = "") -> np.ndarray:
    """Summed nats of every ``bptt`` chunk of ``ids[1:]`` under dynamic evaluation (see :func:`dynamic_evaluate`)."""
    from tqdm.auto import tqdm

    if lr < 0:
        raise RnnlabError(f"dynamic evaluation needs a learning rate >= 0, got {lr}")
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if len(ids) < 2:
        raise RnnlabError(f"dynamic evaluation needs a text of at least 2 characters, got {len(ids)}")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.eval()  # no dropout while scoring; the SGD steps below still adapt the weights
    params = [p for p in model.parameters() if p.requires_grad]
    out, state = [], None
    starts = range(0, len(ids) - 1, bptt)
    try:
        for start in tqdm(starts, desc=progress, disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True):
            x, y = ids[start:start + bptt], ids[start + 1:start + bptt + 1]
            logits, state = model.step(x[:len(y)].unsqueeze(0), state)
            loss = nn.functional.cross_entropy(logits[0].float(), y, reduction="sum")
            out.append(loss.item())          # scored before the weights see this chunk
            state = _detach(state)
            if lr > 0:
                grads = torch.autograd.grad(loss / len(y), params)
                with torch.no_grad():
                    torch._foreach_add_(params, grads, alpha=-lr)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return np.array(out)


def _default_prompt(split: TextSplit) -> str:
    return "ROMEO\n" if split.source == "shakespeare" else split.test[:20]


def plot_curves(history: dict, metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, np.array(history["loss"]) / math.log(2), "o-", label="train (running mean)")
    ax.plot(epochs, np.array(history["val_loss"]) / math.log(2), "o-", label="validation plays")
    ax.axhline(metrics["test_bpc_static"], color="C2", ls="--",
               label=f"test plays, best model: {metrics['test_bpc_static']:.3f}")
    if metrics["evaluation"] == "dynamic":
        ax.axhline(metrics["test_bpc"], color="C2", ls="-.",
                   label=f"  ... by dynamic evaluation: {metrics['test_bpc']:.3f}")
    if "ngram_test_bpc" in metrics:
        ax.axhline(metrics["ngram_test_bpc"], color="C3", ls=":",
                   label=f"Kneser-Ney {metrics['ngram_order']}-gram, test: {metrics['ngram_test_bpc']:.3f}")
    if "ngram_cache_test_bpc" in metrics:
        ax.axhline(metrics["ngram_cache_test_bpc"], color="C4", ls=":",
                   label=f"  ... with a cache of the text read: {metrics['ngram_cache_test_bpc']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title("character language model")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def load_for_sampling(checkpoint: str | Path) -> tuple[CharLM, CharVocab, Config, str]:
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    state = load_checkpoint(checkpoint)
    saved = state.get("config") or {}
    if "vocab" not in saved or "task" not in saved:
        raise RnnlabError(f"{checkpoint} is not a 'rnnlab generate' checkpoint (no vocabulary in its config)")
    names = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in saved["task"].items() if k in names})
    vocab = CharVocab(list(saved["vocab"]))
    model = build_model(config, len(vocab))
    load_model_weights(model, state["model"], checkpoint)
    return model, vocab, config, saved.get("prime", "")


# -- command line --------------------------------------------------------------------------------

DRY_RUN = dict(hidden=32, embedding=16, bptt=32, batch_size=8, eval_streams=4, epochs=1, max_chars=20_000, ngram_order=3,
               sample_length=60, adapt_lr=0.0)  # static: dynamic evaluation reads val and test one chunk at a time


def demo(run_dir: Path) -> dict:
    """About two and a half minutes: a small LSTM, one epoch over the first 1.2 M training characters, scored
    static and by dynamic evaluation, with a sample."""
    config = Config(hidden=256, epochs=1, max_chars=1_200_000, ngram_order=5, sample_length=300)
    write_config(run_dir, config)
    metrics = train(config, run_dir, verbose=0)
    print(metrics.pop("sample"))
    write_metrics(run_dir, metrics)
    return metrics


def register(subparsers) -> None:
    from rnnlab.cli import add_config_arguments, add_run_arguments

    p = subparsers.add_parser("generate", help="character language model: train on Shakespeare (or your text), sample",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="generate_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("train", help="train and score (bits per character) against a Kneser-Ney n-gram",
                       description="Train a character-level LSTM/GRU language model by truncated BPTT and report "
                                   "validation/test bits per character against an interpolated Kneser-Ney n-gram.",
                       epilog="Example: rnnlab generate train --json   |   rnnlab generate train --text my.txt --epochs 3")
    add_config_arguments(t, Config)
    add_run_arguments(t, json_help='print only {"test_bpc", "test_bpc_static", "val_bpc", "ngram_test_bpc", '
                                   '"ngram_cache_test_bpc", "chars_per_s", ...}')
    t.set_defaults(func=_train)
    e = sub.add_parser("eval", help="score a checkpoint on the validation or test text, static and dynamic",
                       description="Bits per character of a trained checkpoint on its validation or test text: with "
                                   "the weights as trained (adapt-lr 0) and by dynamic evaluation at each given "
                                   "learning rate (choose it on the validation text).",
                       epilog="Example: rnnlab generate eval --checkpoint runs/generate/.../checkpoints/best.safetensors "
                              "--split val --adapt-lr 0,0.05,0.1,0.15")
    e.add_argument("--checkpoint", required=True, help="a checkpoint written by 'rnnlab generate train'")
    e.add_argument("--split", choices=("val", "test"), default="val", help="which held-out text to read (default val)")
    e.add_argument("--adapt-lr", default="0,0.1", help="comma-separated dynamic-evaluation learning rates; 0 = static")
    e.add_argument("--json", action="store_true", help='print only [{"adapt_lr", "bpc", "nats_per_char"}, ...]')
    e.set_defaults(func=_eval)
    s = sub.add_parser("sample", help="write text from a trained checkpoint",
                       epilog='Example: rnnlab generate sample --checkpoint runs/generate/.../checkpoints/best.safetensors '
                              '--prompt "ROMEO:" --length 500 --temperature 0.8')
    s.add_argument("--checkpoint", required=True, help="a checkpoint written by 'rnnlab generate train'")
    s.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    s.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more varied (default 0.8)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest characters (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_sample)


def _train(args) -> int:
    from rnnlab.cli import start_run

    config, run_dir = start_run(Config, args, "generate", DRY_RUN)
    metrics = train(config, run_dir, verbose=0 if args.json else 1, resume=args.resume)
    sample = metrics.pop("sample")
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print_table([{k: metrics[k] for k in ("test_bpc", "test_bpc_static", "val_bpc", "ngram_test_bpc",
                                          "ngram_cache_test_bpc", "chars_per_s", "train_minutes") if k in metrics}])
    print(f"(test_bpc, val_bpc: {metrics['evaluation']} evaluation; test_bpc_static: the trained weights unchanged; "
          f"ngram_cache: Kneser-Ney mixed with a cache of the text read so far)")
    print(f"\nsample (temperature 0.8):\n{sample}\n")
    print(f"run folder: {run_dir}\ncheckpoint: {metrics['checkpoint']}")
    return 0


def _checkpoint_path(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise RnnlabError(f"--checkpoint expects a file written by 'rnnlab generate train', got {str(path)!r} (not a file)")
    return path


def _eval(args) -> int:
    try:
        rates = [float(v) for v in args.adapt_lr.split(",")]
    except ValueError:
        raise RnnlabError(f"--adapt-lr expects comma-separated numbers such as 0,0.1, got {args.adapt_lr!r}") from None
    model, vocab, config, _ = load_for_sampling(_checkpoint_path(args.checkpoint))
    ids = vocab.encode(getattr(load_split(config), args.split))
    rows = []
    for lr in rates:
        scores = dynamic_evaluate(model, ids, config.bptt, lr, "" if args.json else f"{args.split}, adapt-lr {lr:g}")
        rows.append({"adapt_lr": lr, "bpc": scores["bpc"], "nats_per_char": scores["nats_per_char"]})
        if not args.json:
            print(f"{args.split}: adapt-lr {lr:g}: {scores['bpc']:.4f} bpc", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


def _sample(args) -> int:
    model, vocab, _, prime = load_for_sampling(_checkpoint_path(args.checkpoint))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = generate(model, vocab, args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed,
                        prime)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(text)
    return 0
