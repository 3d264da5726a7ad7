"""An encoder-decoder with attention, and its decoders (greedy, batched beam search).

Encoder: embedding -> bidirectional LSTM/GRU over the source (variable lengths) -> annotations
``e_1..e_S`` (2H each). The decoder's first state is ``tanh(W_b [h_fwd; h_bwd])`` of the encoder's
final states (Bahdanau et al. 2015). Each decoder step (Luong et al. 2015, input feeding)::

    s_t      = Cell([embed(y_{t-1}); a_{t-1}], s_{t-1})          # LSTM, GRU or tanh RNN cell
    score_i  = v^T tanh(W_q s_t + W_k e_i)      "additive" (Bahdanau)
             = s_t . (W_k e_i)                   "dot"  (Luong; e projected to the decoder size)
             = s_t^T W_a (W_k e_i)               "general" (Luong)
    alpha    = softmax(score) over the source (padding masked)
    c_t      = sum_i alpha_i e_i
    a_t      = tanh(W_c [s_t; c_t])                             # the attentional vector, fed back
    p(y_t)   = softmax(W_o a_t)

``attention="none"`` is the baseline of the same size without attention: ``c_t = 0``, so the
source reaches the decoder only through its first state (Sutskever et al. 2014).

With a ``copy_map`` (pointer-generator, See et al. 2017; Gu et al. 2016) the model can also copy an
encoder position whose piece exists in the target vocabulary (``copy_map[source id] = target id``,
-1 where there is none): a placeholder, a name, or a piece of a translation-memory hint::

    beta     = alpha restricted to copyable positions, renormalised
    g_t      = sigmoid(w_g [a_t; c_t; embed(y_{t-1})])               # p(generate)
    p(y_t)   = g_t softmax(W_o a_t)(y) + (1 - g_t) sum_{i: copy_map[x_i] = y} beta_i

and ``step`` returns ``log p(y_t)`` in place of logits (a softmax leaves them unchanged).

``step(y_prev, state)`` is the one decoder signature: teacher forcing loops it over the reference,
greedy and beam search loop it over their own outputs. :class:`Ensemble` has the same ``encode`` /
``step`` signature, so the decoders run several models averaged as they run one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnlab
from rnnlab.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.errors import RnnlabError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
ATTENTION = ("additive", "dot", "general", "none")
CELLS = {"lstm": (rnnlab.LSTM, LSTMCell), "gru": (rnnlab.GRU, GRUCell), "rnn": (rnnlab.RNN, RNNCell)}


class Attention(nn.Module):
    """Scores of a decoder state against every source annotation; returns (context, weights)."""

    def __init__(self, kind: str, dec: int, enc: int):
        super().__init__()
        if kind not in ATTENTION:
            raise RnnlabError(f"attention must be one of {ATTENTION}, got {kind!r}")
        self.kind = kind
        if kind == "additive":
            self.w_q = nn.Linear(dec, dec, bias=False)
            self.w_k = nn.Linear(enc, dec)
            self.v = nn.Linear(dec, 1, bias=False)
        elif kind in ("dot", "general"):
            self.w_k = nn.Linear(enc, dec, bias=False)
            if kind == "general":
                self.w_a = nn.Linear(dec, dec, bias=False)

    def keys(self, enc: Tensor) -> Tensor:
        """Source-side projections, computed once per sentence (not once per step)."""
        return enc if self.kind == "none" else self.w_k(enc)

    def forward(self, query: Tensor, keys: Tensor, enc: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "none":
            return enc.new_zeros(enc.shape[0], enc.shape[2]), enc.new_zeros(enc.shape[:2])
        if self.kind == "additive":
            score = self.v(torch.tanh(self.w_q(query).unsqueeze(1) + keys)).squeeze(-1)
        else:
            q = self.w_a(query) if self.kind == "general" else query
            score = torch.bmm(keys, q.unsqueeze(-1)).squeeze(-1)
        score = score.masked_fill(~mask, -math.inf)
        alpha = torch.softmax(score, dim=-1)
        return torch.bmm(alpha.unsqueeze(1), enc).squeeze(1), alpha


@dataclass
class State:
    """Everything one decoder step needs, batched; beam search reorders it with :meth:`select`."""
    hidden: Tensor | tuple[Tensor, Tensor]
    feed: Tensor            # a_{t-1}
    enc: Tensor             # (B, S, 2H)
    keys: Tensor            # (B, S, D) projected annotations
    mask: Tensor            # (B, S) True on real source tokens
    copy_to: Tensor | None = None   # (B, S) target id each position copies to, -1: none (copy models only)

    def select(self, index: Tensor) -> "State":
        """Rows ``index`` of everything (e.g. each sentence repeated once per beam)."""
        h = tuple(x[index] for x in self.hidden) if isinstance(self.hidden, tuple) else self.hidden[index]
        return State(h, self.feed[index], self.enc[index], self.keys[index], self.mask[index],
                     None if self.copy_to is None else self.copy_to[index])

    def reorder(self, index: Tensor) -> "State":
        """Beam search's reordering: ``index`` only moves rows among one sentence's beams, whose
        source side is identical, so only the decoder's own state is gathered."""
        h = tuple(x[index] for x in self.hidden) if isinstance(self.hidden, tuple) else self.hidden[index]
        return State(h, self.feed[index], self.enc, self.keys, self.mask, self.copy_to)


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, cell: str = "lstm", embedding: int = 256,
                 hidden: int = 256, attention: str = "additive", dropout: float = 0.2,
                 copy_map: Tensor | None = None):
        super().__init__()
        if cell not in CELLS:
            raise RnnlabError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if copy_map is not None and attention == "none":
            raise RnnlabError("copying needs attention to point with; got copy_map with attention='none'")
        if copy_map is not None and tuple(copy_map.shape) != (src_vocab,):
            raise RnnlabError(f"copy_map must have one target id per source id, shape ({src_vocab},), "
                              f"got {tuple(copy_map.shape)}")
        layer, cell_cls = CELLS[cell]
        dec = 2 * hidden
        self.cell_kind = cell
        self.src_embed = nn.Embedding(src_vocab, embedding, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, embedding, padding_idx=PAD)
        self.encoder = layer(embedding, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, dec * (2 if cell == "lstm" else 1))
        self.cell = cell_cls(embedding + dec, dec)
        self.attention = Attention(attention, dec, 2 * hidden)
        self.combine = nn.Linear(dec + 2 * hidden, dec, bias=False)
        self.out = nn.Linear(dec, tgt_vocab)
        self.drop = nn.Dropout(dropout)
        self.dec_size = dec
        if copy_map is not None:
            self.register_buffer("copy_map", copy_map.long().clone())
            self.gate = nn.Linear(dec + 2 * hidden + embedding, 1)
        else:
            self.copy_map = None

    def encode(self, src: Tensor, src_len: Tensor) -> State:
        enc, final = self.encoder(self.drop(self.src_embed(src)), lengths=src_len)
        h_n = final[0] if isinstance(final, tuple) else final            # (2, B, H): forward, backward
        first = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], -1)))
        hidden = tuple(first.chunk(2, -1)) if self.cell_kind == "lstm" else first
        mask = torch.arange(src.shape[1], device=src.device)[None] < src_len[:, None]
        feed = enc.new_zeros(src.shape[0], self.dec_size)
        copy_to = None if self.copy_map is None else self.copy_map[src].masked_fill(~mask, -1)
        return State(hidden, feed, enc, self.attention.keys(enc), mask, copy_to)

    def step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        """One target token: ``(logits (B, V), new state, attention weights (B, S))``; a copy model
        returns log-probabilities in place of the logits."""
        embedded = self.drop(self.tgt_embed(y_prev))
        state, alpha, context = self._advance(embedded, state)
        return self._scores(state.feed, context, embedded, alpha, state.copy_to), state, alpha

    def _advance(self, embedded: Tensor, state: State) -> tuple[State, Tensor, Tensor]:
        """The recurrent part of a step: new cell state, attention weights, context ``c_t`` and
        attentional vector ``a_t`` (in the new state's ``feed``)."""
        hidden = self.cell(torch.cat([embedded, state.feed], -1), state.hidden)
        query = hidden[0] if isinstance(hidden, tuple) else hidden
        context, alpha = self.attention(query, state.keys, state.enc, state.mask)
        feed = torch.tanh(self.combine(torch.cat([query, context], -1)))
        return State(hidden, feed, state.enc, state.keys, state.mask, state.copy_to), alpha, context

    def _scores(self, feed: Tensor, context: Tensor, embedded: Tensor, alpha: Tensor,
                copy_to: Tensor | None) -> Tensor:
        """Logits over the target vocabulary, or with copying ``log p(y)`` of the pointer-generator
        mixture. Leading dimensions ``(B,)`` for a step or ``(B, T)`` for teacher forcing."""
        logits = self.out(self.drop(feed))
        if self.copy_map is None:
            return logits
        if alpha.dim() == 3:                                              # (B, T, S): teacher forcing
            copy_to = copy_to[:, None].expand_as(alpha)
        copyable = copy_to >= 0
        beta = alpha.masked_fill(~copyable, 0.0)
        total = beta.sum(-1, keepdim=True)
        beta = beta / total.clamp_min(1e-9)
        # no copyable position: generate only (the mixture would otherwise lose 1 - g of its mass)
        generate = torch.sigmoid(self.gate(torch.cat([feed, context, embedded], -1)))
        generate = torch.where(total > 0, generate, torch.ones_like(generate))
        copied = torch.zeros_like(logits).scatter_add_(-1, copy_to.clamp_min(0), beta)
        p = generate * torch.softmax(logits.float(), -1) + (1 - generate) * copied.float()
        return torch.log(p.clamp_min(1e-12)).to(logits.dtype)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: logits ``(B, T, V)`` for the reference prefix ``tgt_in`` (starting with BOS).
        The same arithmetic as looping :meth:`step`, but the embedding and the output projection (the
        largest matrix) run once over all steps instead of once per step: about 2x faster to train."""
        state = self.encode(src, src_len)
        embedded = self.drop(self.tgt_embed(tgt_in))
        feeds, alphas, contexts = [], [], []
        for t in range(tgt_in.shape[1]):
            state, alpha, context = self._advance(embedded[:, t], state)
            feeds.append(state.feed)
            alphas.append(alpha)
            contexts.append(context)
        return self._scores(torch.stack(feeds, 1), torch.stack(contexts, 1), embedded, torch.stack(alphas, 1),
                            state.copy_to)


@dataclass
class EnsembleState:
    """One :class:`State` per ensemble member, selected and reordered together."""
    members: list[State]

    def select(self, index: Tensor) -> "EnsembleState":
        return EnsembleState([s.select(index) for s in self.members])

    def reorder(self, index: Tensor) -> "EnsembleState":
        return EnsembleState([s.reorder(index) for s in self.members])


class Ensemble(nn.Module):
    """Independently trained models decoding as one: each step's distribution is the mean of the
    members' probabilities, ``log p(y) = log (1/K) sum_k p_k(y)`` (Sutskever et al. 2014; Bahdanau
    et al. 2015). Members differ only in their random seed, so their errors are partly independent
    and the mean is better than any one of them. ``step`` returns these log-probabilities in place of
    logits (a softmax leaves them unchanged), so greedy and beam search decode an ensemble as they
    decode one model."""

    def __init__(self, members: list[Seq2Seq]):
        super().__init__()
        if len(members) < 2:
            raise RnnlabError(f"an ensemble needs at least 2 models, got {len(members)}")
        self.members = nn.ModuleList(members)

    @property
    def attention(self) -> Attention:
        return self.members[0].attention

    def encode(self, src: Tensor, src_len: Tensor) -> EnsembleState:
        return EnsembleState([m.encode(src, src_len) for m in self.members])

    def step(self, y_prev: Tensor, state: EnsembleState) -> tuple[Tensor, EnsembleState, Tensor]:
        """``(log of the mean probability (B, V), new states, mean attention weights (B, S))``."""
        outs = [m.step(y_prev, s) for m, s in zip(self.members, state.members)]
        logp = torch.stack([torch.log_softmax(o[0].float(), -1) for o in outs])
        mean = torch.logsumexp(logp, 0) - math.log(len(outs))
        return mean, EnsembleState([o[1] for o in outs]), torch.stack([o[2] for o in outs]).mean(0)


def smoothed_cross_entropy(smoothing: float):
    """Label-smoothed cross-entropy over non-padding target tokens (Szegedy et al. 2016)."""

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD,
                               label_smoothing=smoothing)

    return loss


@dataclass
class Constraints:
    """Per-sentence vocabulary constraints for decoding (e.g. placeholders, Hokamp & Liu 2017 in spirit):
    ``required`` tokens must each be produced before EOS is allowed, ``banned`` tokens never are.
    Both are ``(B, V)`` boolean masks."""
    required: Tensor
    banned: Tensor

    @classmethod
    def from_lists(cls, required: list[list[int]], banned: list[list[int]], vocab: int, device=None) -> "Constraints":
        req = torch.zeros(len(required), vocab, dtype=torch.bool, device=device)
        ban = torch.zeros(len(banned), vocab, dtype=torch.bool, device=device)
        for i, (r, b) in enumerate(zip(required, banned)):
            req[i, r] = True
            ban[i, b] = True
        return cls(req, ban)

    def apply(self, logp: Tensor, missing: Tensor, rows: Tensor | None, steps_left: int) -> Tensor:
        """Log-probabilities with banned tokens and a premature EOS made impossible. ``missing``:
        ``(N, V)`` required tokens not produced yet; ``rows`` maps the N rows to sentences; when only
        as many steps are left as tokens are missing, only missing tokens may come (so the step
        limit cannot cut one off)."""
        banned = self.banned if rows is None else self.banned[rows]
        logp = logp.masked_fill(banned, -math.inf)
        logp[:, EOS] = logp[:, EOS].masked_fill(missing.any(-1), -math.inf)
        urgent = missing.sum(-1) >= steps_left
        return torch.where(urgent[:, None] & ~missing, torch.full_like(logp, -math.inf), logp)


def repeated_ngrams(tokens: Tensor, n: int, vocab: int) -> Tensor:
    """``(N, V)`` mask of the tokens that would repeat an ``n``-gram already in each row of ``tokens``
    ``(N, L)`` (the history so far): a token is banned when the last ``n - 1`` tokens followed by it
    already occurred (Paulus et al. 2018's trigram blocking; the cure for the loops an under-trained
    decoder falls into, "ou une image ou une image ou une image ...")."""
    banned = torch.zeros(tokens.shape[0], vocab, dtype=torch.bool, device=tokens.device)
    if n < 1 or tokens.shape[1] < n:
        return banned
    windows = tokens.unfold(1, n, 1)                                   # (N, W, n)
    tail = tokens[:, tokens.shape[1] - n + 1:]                         # (N, n-1)
    match = (windows[:, :, :n - 1] == tail[:, None]).all(-1)           # (N, W)
    banned.scatter_(1, torch.where(match, windows[:, :, n - 1], PAD), True)
    banned[:, PAD] = False  # PAD marks "no match" above (it is never produced anyway)
    return banned


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    """GNMT's ``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016); alpha 0 = raw log-probability."""
    return ((5.0 + length.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Seq2Seq, src: Tensor, src_len: Tensor, beam: int = 5, max_len: int = 100,
                alpha: float = 0.6, return_attention: bool = False, constraints: Constraints | None = None,
                no_repeat_ngram: int = 0):
    """The best hypothesis per sentence, batched over sentences and beams.

    Finished hypotheses (ending in EOS) keep their score: their only continuation is EOS at no
    cost. At the end hypotheses are ranked by score / length penalty. With ``beam=1`` this is
    exactly greedy decoding. Returns token lists (without BOS/EOS) and, optionally, each chosen
    hypothesis' attention weights ``(T, S)``. ``constraints`` (see :class:`Constraints`) hold back
    EOS until every required token is out and never emit a banned one. ``no_repeat_ngram`` n > 0:
    no hypothesis repeats one of its own n-grams of tokens (see :func:`repeated_ngrams`).
    """
    if beam < 1:
        raise RnnlabError(f"beam must be >= 1, got {beam}")
    was_training = model.training
    model.eval()
    b = src.shape[0]
    state = model.encode(src, src_len).select(torch.arange(b).repeat_interleave(beam))
    scores = src.new_zeros(b, beam, dtype=torch.float)
    scores[:, 1:] = -math.inf  # all beams start as one hypothesis
    tokens = torch.full((b * beam, 1), BOS, dtype=torch.long, device=src.device)
    lengths = torch.zeros(b * beam, dtype=torch.long, device=src.device)
    done = torch.zeros(b * beam, dtype=torch.bool, device=src.device)
    sentence = torch.arange(b, device=src.device).repeat_interleave(beam)
    missing = constraints.required[sentence] if constraints is not None else None
    attn = []
    for t in range(max_len):
        logits, state, alpha_t = model.step(tokens[:, -1], state)
        logp = torch.log_softmax(logits.float(), -1)
        if constraints is not None:
            logp = constraints.apply(logp, missing, sentence, max_len - t)
        if no_repeat_ngram:
            logp = logp.masked_fill(repeated_ngrams(tokens, no_repeat_ngram, logp.shape[-1]), -math.inf)
        logp[done] = -math.inf
        logp[done, EOS] = 0.0
        vocab = logp.shape[-1]
        total = (scores.view(-1, 1) + logp).view(b, beam * vocab)
        scores, flat = total.topk(beam, dim=-1)
        origin = (flat // vocab) + torch.arange(b, device=src.device)[:, None] * beam
        origin, word = origin.view(-1), (flat % vocab).view(-1)
        state = state.reorder(origin)
        lengths = lengths[origin] + (~done[origin]).long()
        done = done[origin] | (word == EOS)
        tokens = torch.cat([tokens[origin], word[:, None]], 1)
        if missing is not None:
            missing = missing[origin]
            missing[torch.arange(len(word), device=src.device), word] = False
        if return_attention:
            attn = [a[origin] for a in attn] + [alpha_t[origin]]
        if done.all():
            break
    final = scores.view(-1) / length_penalty(lengths, alpha)
    best = final.view(b, beam).argmax(-1) + torch.arange(b, device=src.device) * beam
    out = []
    for row in best.tolist():
        seq = tokens[row, 1:].tolist()
        out.append(seq[:seq.index(EOS)] if EOS in seq else seq)
    model.train(was_training)
    if return_attention:
        weights = torch.stack(attn, 1)[best] if attn else None  # (B, T, S)
        return out, weights
    return out


@torch.no_grad()
def greedy(model: Seq2Seq, src: Tensor, src_len: Tensor, max_len: int = 100,
           constraints: Constraints | None = None, no_repeat_ngram: int = 0) -> list[list[int]]:
    """Greedy decoding: the most likely (allowed) token at every step, until EOS or ``max_len``
    (``no_repeat_ngram`` as in :func:`beam_search`)."""
    was_training = model.training
    model.eval()
    state = model.encode(src, src_len)
    y = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(src.shape[0])]
    finished = [False] * src.shape[0]
    missing = constraints.required.clone() if constraints is not None else None
    history = y[:, None]
    for t in range(max_len):
        logits, state, _ = model.step(y, state)
        if constraints is not None:
            logits = constraints.apply(logits.float(), missing, None, max_len - t)
        if no_repeat_ngram:
            logits = logits.masked_fill(repeated_ngrams(history, no_repeat_ngram, logits.shape[-1]), -math.inf)
        y = logits.argmax(-1)
        history = torch.cat([history, y[:, None]], 1)
        if missing is not None:
            missing[torch.arange(len(y), device=src.device), y] = False
        for i, token in enumerate(y.tolist()):
            if not finished[i]:
                if token == EOS:
                    finished[i] = True
                else:
                    out[i].append(token)
        if all(finished):
            break
    model.train(was_training)
    return out
