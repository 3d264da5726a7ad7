"""Speech recognition: features, the voice split, CTC decoding, WER, audio loading and `speech recognize`."""
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

sd = pytest.importorskip("rnnlab.data.speech")
pytest.importorskip("librosa")
pytest.importorskip("soundfile")

from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.metrics.speech import confusion_matrix, edit_distance, word_error_rate  # noqa: E402
from rnnlab.tasks import speech  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                                  reason="espeak-ng / flite missing (make install adds them)")
HAVE_FESTIVAL = shutil.which("festival") is not None and shutil.which("text2wave") is not None
needs_festival = pytest.mark.skipif(not HAVE_FESTIVAL, reason="festival missing (make install adds it)")


def _human_available() -> bool:
    try:
        sd.human_test_set()
    except RnnlabError:
        return False
    return True


needs_human = pytest.mark.skipif(not _human_available(), reason="asterisk-core-sounds-en-wav / klettres-data missing")


# -- features ----------------------------------------------------------------------------------------

def test_feature_shapes():
    t = np.arange(8000) / 8000
    y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    f = sd.features(y)
    assert f.shape == ((8000 - 256) // sd.HOP + 1, sd.N_MELS)  # 32 ms frames every 10 ms
    assert f.dtype == np.float32 and np.isfinite(f).all()
    assert np.allclose(f.mean(0), 0, atol=1e-4)  # mean removed per band
    assert np.allclose(sd.features(0.1 * y), f, atol=1e-3)  # gain drops out
    x, lengths = sd.pad_features([f, f[:30]])
    assert x.shape == (2, len(f), sd.N_MELS) and lengths.tolist() == [len(f), 30]
    assert (x[1, 30:] == 0).all()
    stacked, n = speech.stack_frames(torch.from_numpy(x), torch.from_numpy(lengths))
    assert stacked.shape == (2, math.ceil(len(f) / 2), 2 * sd.N_MELS) and n.tolist() == [math.ceil(len(f) / 2), 15]


def test_models_shapes_and_padding_invariance():
    torch.manual_seed(0)
    model = speech.WordClassifier(len(sd.WORDS), "gru", hidden=8, layers=1).eval()
    x = torch.randn(2, 40, sd.N_MELS)
    lengths = torch.tensor([40, 25])
    logits = model(x, lengths)
    assert logits.shape == (2, len(sd.WORDS))
    alone = model(x[1:, :25], lengths[1:])  # padding must not change a shorter utterance's answer
    assert torch.allclose(logits[1], alone[0], atol=1e-5)
    ctc = speech.DigitCTC(hidden=8, stack=2).eval()
    log_probs, out_lengths = ctc(x, lengths)
    assert log_probs.shape == (2, 20, 11) and out_lengths.tolist() == [20, 13]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 20), atol=1e-5)


def test_embedding_front_models_and_old_runs():
    config = speech.Config(hidden=8, layers=1, ctc_hidden=8, ctc_layers=1, ctc_front="embedding")
    assert config.front == "embedding" and speech.Config().ctc_front == "mfcc"
    model, ctc = speech.build_classifier(config).eval(), speech.build_ctc(config).eval()
    x, lengths = torch.randn(2, 12, 96), torch.tensor([12, 7])  # one 96-number embedding per 80 ms step
    assert model(x, lengths).shape == (2, len(sd.WORDS))
    assert ctc(x, lengths)[0].shape == (2, 12, 11)  # no frames stacked: one step per embedding
    assert not model.augment  # SpecAugment's mel warps and masks mean nothing to embeddings
    old = speech.saved_config({"cell": "gru", "hidden": 8, "gone_setting": 1})  # a run from before `front`
    assert old.front == old.ctc_front == "mfcc" and old.cell == "gru"
    assert speech.saved_config({"front": "embedding"}).ctc_front == "embedding"  # before `ctc_front`: both read it
    assert speech.build_classifier(old).front.dct.shape == (sd.N_MELS, 20)
    for name in ("front", "ctc_front"):
        with pytest.raises(RnnlabError, match=f"{name} must be one of"):
            speech.Config(**{name: "wav2vec"})


def test_ensemble_averages_its_members_and_loads_as_trained(tmp_path):
    config = speech.Config(hidden=4, layers=1, epochs=1, batch_size=8, ensemble=2, mfcc_members=0)
    g = torch.Generator().manual_seed(0)
    x, lengths, y = torch.randn(24, 6, 96, generator=g), torch.randint(2, 7, (24,), generator=g), torch.arange(24) % 3
    asked = []

    def member_words(k):  # each member asks for its own training words
        asked.append(k)
        return x, lengths, y

    val = (x[:8], lengths[:8], y[:8])
    model, fits, _, _ = speech.train_classifiers(config, member_words, val, tmp_path, verbose=0)
    assert isinstance(model, speech.WordEnsemble) and len(fits) == 2 and asked == [0, 1]
    a, b = model.members
    assert not torch.equal(a.head.weight, b.head.weight)  # seeds 0 and 1: two different models
    with torch.no_grad():
        mean = (a(x, lengths).softmax(-1) + b(x, lengths).softmax(-1)) / 2
        assert torch.allclose(model(x, lengths).exp(), mean, atol=1e-6)  # the log of the mean probability
        loaded, ctc, saved = speech.load_models(tmp_path)
        assert ctc is None and saved.ensemble == 2 and torch.allclose(loaded(x, lengths), model(x, lengths))
    (tmp_path / "member-2" / "checkpoints" / "best.safetensors").unlink()
    with pytest.raises(RnnlabError, match="expected 2 word classifiers"):
        speech.load_models(tmp_path)
    assert speech.saved_config({"front": "embedding"}).ensemble == 1  # runs from before the ensemble had one
    with pytest.raises(RnnlabError, match="expected 1 or more"):
        speech.Config(ensemble=0)
    with pytest.raises(RnnlabError, match="at least 2"):
        speech.WordEnsemble([a])


def test_mixed_ensemble_reads_each_members_front_end(tmp_path):
    """Embedding members and cepstra members in one ensemble: each is trained, checkpointed on and asked
    with its own features of the same words, and the run loads back as it was trained."""
    config = speech.Config(hidden=4, layers=1, epochs=1, batch_size=8, ensemble=1, mfcc_members=1)
    assert speech.classifier_fronts(config) == ["embedding", "mfcc"]
    assert speech.classifier_fronts(speech.Config()) == ["embedding", "embedding", "mfcc"]  # the default run
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    feats = {"embedding": (torch.randn(24, 6, 96, generator=g), torch.randint(2, 7, (24,), generator=g)),
             "mfcc": (torch.randn(24, 30, sd.N_MELS, generator=g), torch.randint(10, 31, (24,), generator=g))}
    x, lengths, labels = speech.by_front(config, lambda front: (*feats[front], y))
    assert set(x) == set(lengths) == {"embedding", "mfcc"} and labels is y
    asked = []

    def member_words(k):
        asked.append(k)
        return (*feats[["embedding", "mfcc"][k]], y)

    model, fits, _, _ = speech.train_classifiers(config, member_words, (x, lengths, y), tmp_path, verbose=0)
    assert isinstance(model, speech.WordEnsemble) and model.fronts == ["embedding", "mfcc"] and asked == [0, 1]
    emb, cep = model.members
    assert emb.front.dct.shape == (96, 96) and cep.front.dct.shape == (sd.N_MELS, config.cepstra)
    with torch.no_grad():
        mean = (emb(*feats["embedding"]).softmax(-1) + cep(*feats["mfcc"]).softmax(-1)) / 2
        assert torch.allclose(model(x, lengths).exp(), mean, atol=1e-6)
        assert torch.equal(speech.predict_words(model, x, lengths, batch=5), mean.argmax(-1))  # batched by rows
        loaded, _, saved = speech.load_models(tmp_path)
        assert saved.mfcc_members == 1 and torch.allclose(loaded(x, lengths), model(x, lengths))
    with pytest.raises(RnnlabError, match="'mfcc' front end"):
        model({"embedding": x["embedding"]}, {"embedding": lengths["embedding"]})
    with pytest.raises(RnnlabError, match="a front end for each"):
        speech.WordEnsemble([emb, cep], ["embedding"])
    with pytest.raises(RnnlabError, match="expected 0 or more"):
        speech.Config(mfcc_members=-1)
    assert speech.saved_config({"front": "embedding", "ensemble": 2}).mfcc_members == 0  # runs from before


def test_augment_changes_audio_but_keeps_it_finite():
    rng = np.random.default_rng(0)
    y = (0.5 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000)).astype(np.float32)
    out = sd.augment(y, rng)
    assert out.dtype == np.float32 and np.isfinite(out).all() and len(out) > 0.8 * len(y)
    assert sd.features(out).shape[1] == sd.N_MELS
    band = sd.telephone(np.random.default_rng(1).standard_normal(8000).astype(np.float32))
    spectrum = np.abs(np.fft.rfft(band)) ** 2
    freqs = np.fft.rfftfreq(8000, 1 / 8000)
    assert spectrum[freqs < 100].mean() < 0.05 * spectrum[(freqs > 500) & (freqs < 3000)].mean()


def test_reverberate_adds_a_decaying_room_tail():
    rng = np.random.default_rng(3)
    impulse = np.zeros(800, np.float32)
    impulse[0] = 1.0
    out = sd.reverberate(impulse, rng)
    rt60 = (len(out) - len(impulse)) / sd.SAMPLE_RATE  # the tail is kept: as long as the reverberation time
    assert 0.15 <= rt60 <= 0.7 and out[0] == pytest.approx(1.0)
    n = int(rt60 * sd.SAMPLE_RATE)
    early, late = out[1:n // 6], out[n - n // 6:n]
    assert 0 < np.sum(early ** 2) < 0.6 ** 2 + 1e-6  # the wet part: at most 60% of the direct sound
    assert np.mean(late ** 2) < 1e-3 * np.mean(early ** 2)  # decays by more than 30 dB over the tail
    y = (0.5 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000)).astype(np.float32)
    assert np.array_equal(sd.augment(y, np.random.default_rng(0)), sd.augment(y, np.random.default_rng(0), 0.0))
    assert len(sd.augment(y, np.random.default_rng(0), 1.0)) > len(sd.augment(y, np.random.default_rng(0)))
    assert len(sd.augment(y, np.random.default_rng(0), pad=0.0)) < len(sd.augment(y, np.random.default_rng(0), pad=1.0))
    for bad in (dict(reverb=1.5), dict(pad=-0.1), dict(human_train_copies=-1), dict(trim_db=0)):
        with pytest.raises(RnnlabError, match="expected"):
            speech.Config(**bad)


# -- the voice split -------------------------------------------------------------------------------------

@needs_espeak
def test_voice_split_keeps_validation_voices_out_of_training():
    config = speech.Config(festival_voices=40 if HAVE_FESTIVAL else 0)
    train, val = speech.voice_sets(config)
    assert len(train) >= 200 and len(val) >= 10
    train_ids, val_ids = {v.identity for v in train}, {v.identity for v in val}
    assert not train_ids & val_ids
    for v in train:  # no held-out variant or flite voice in any training setting
        assert v.variant not in sd.VAL_VARIANTS and v.accent != sd.VAL_FLITE, v
    # every accent is trained on, and held-out speakers are heard in more than one of them
    assert {v.accent for v in train if v.engine == "espeak-ng"} == set(sd.espeak_accents())
    assert len({v.accent for v in val if v.engine == "espeak-ng"}) > 1
    assert {v.engine for v in val} == {"espeak-ng", "flite"}
    assert {v.engine for v in train} == {"espeak-ng", "flite"} | ({"festival"} if HAVE_FESTIVAL else set())
    assert any(v.accent == sd.VAL_FLITE for v in val)
    member, same_val = speech.voice_sets(config, config.seed + 1)  # an ensemble member's own training voices
    assert same_val == val and member != train and not {v.identity for v in member} & val_ids
    leaked = train + [val[0]]
    with pytest.raises(RnnlabError, match="voice split"):
        sd.check_voice_split(leaked, val)


@needs_festival
def test_festival_voices_are_training_voices_only():
    voices = sd.sample_voices(0, 0, "train", 0, n_festival=12)
    assert len(voices) >= 6 and {v.engine for v in voices} == {"festival"}
    assert not any(sd.is_validation_voice(v) for v in voices)
    assert {v.accent for v in voices} <= set(sd.FESTIVAL_VOICES)
    assert all(v.pitch == 0 for v in voices if v.accent.endswith("_hts"))  # HTS ignores a pitch change
    sd.check_voice_split(voices, sd.sample_voices(2, 1, "val", 0))
    with pytest.raises(RnnlabError, match="festival voices are training voices only"):
        sd.sample_voices(0, 0, "val", 0, n_festival=1)


@needs_festival
@pytest.mark.parametrize("name", sd.FESTIVAL_VOICES)
def test_festival_synthesises_one_word_per_voice(name, tmp_path, monkeypatch):
    if name not in sd.festival_voices():
        pytest.skip(f"festival voice {name} not installed")
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    voice = sd.Voice("festival", name, "", 1.2, 0.0 if name.endswith("_hts") else 1.3)
    (y,) = sd.synthesize(voice, ("seven",))
    assert y.dtype == np.float32 and 0.2 <= len(y) / sd.SAMPLE_RATE <= 2.0  # SAMPLE_RATE: the cache's rate
    assert np.abs(y).max() > 0.5 and np.sqrt(np.mean(y ** 2)) > 0.02  # speech, not silence
    assert len(list(tmp_path.glob("speech/*.npz"))) == 1
    (again,) = sd.synthesize(voice, ("seven",))  # the second call reads the cache
    assert np.allclose(again, y, atol=1e-4)


@needs_human
def test_human_test_set_is_115_recordings_of_62_words():
    items = sd.human_test_set()
    assert len(items) == 115
    assert {r.word for r in items} == set(sd.WORDS)
    assert sum(r.speaker == "asterisk" for r in items) == 63
    assert not any(r.path.endswith(("oh.wav", "9_p.wav")) for r in items)
    assert all(not r.path.startswith(str(sd.cache_dir())) for r in items)


@needs_human
@pytest.mark.skipif(not sd.QABCS_ROOT.is_dir(), reason="qabcs-data missing (make install adds it)")
def test_human_training_letters_are_no_test_speaker():
    train, test = sd.human_training_set(), sd.human_test_set()
    assert len(train) == 28 and {r.word for r in train} == set(sd.LETTERS)
    assert {r.speaker for r in train} == {"qabcs-en", "qabcs-en_gb"}
    sd.check_speaker_split(train, test)
    words = speech.human_training_words(speech.Config(human_train_copies=2))
    assert len(words) == 28 and all(n == 2 and len(y) > 0.2 * sd.SAMPLE_RATE for _, y, n in words)
    with pytest.raises(RnnlabError, match="speaker split"):  # a test file renamed to a training speaker
        sd.check_speaker_split(train + [sd.Recording(test[-1].path, test[-1].word, "qabcs-en")], test)
    with pytest.raises(RnnlabError, match="speaker split"):
        sd.check_speaker_split(train + [test[0]], test)


# -- decoding and metrics ------------------------------------------------------------------------------------

def test_ctc_greedy_and_beam_decoding_on_a_hand_made_case():
    # Labels {blank, 1}; every step p(blank)=0.6, p(1)=0.4. The best single path is blank-blank-blank
    # (0.216), so greedy says "": but the paths that collapse to "1" add up to 0.688, so beam says "1".
    log_probs = torch.tensor([[0.6, 0.4]] * 3).log()
    assert speech.greedy_decode(log_probs) == []
    assert speech.beam_decode(log_probs, beam=4) == [1]
    # Repeats merge unless a blank separates them.
    one_hot = torch.full((5, 3), 1e-4)
    for t, k in enumerate([1, 1, 0, 1, 2]):
        one_hot[t, k] = 1.0
    assert speech.greedy_decode(one_hot.log()) == [1, 1, 2]
    assert speech.beam_decode(one_hot.log(), beam=3) == [1, 1, 2]
    assert speech.greedy_decode(one_hot.log(), length=2) == [1]


def test_ctc_loss_trains_a_tiny_model_to_read_two_digits():
    torch.manual_seed(0)
    model = speech.DigitCTC(hidden=16, layers=1, augment=False, stack=2, cepstra=0)
    # Two "words": a rise in channels 0-9 means digit 3, in channels 20-29 digit 7.
    x = torch.zeros(8, 40, sd.N_MELS)
    target = torch.zeros(8, 6, dtype=torch.long)
    for i in range(8):
        seq = [3, 7] if i % 2 else [7, 3]
        for j, d in enumerate(seq):
            lo = 0 if d == 3 else 20
            x[i, 5 + 15 * j:15 + 15 * j, lo:lo + 10] = 3.0
        target[i, :2] = torch.tensor(seq) + 1
    lengths = torch.full((8,), 40)
    opt = torch.optim.Adam(model.parameters(), 0.02)
    for _ in range(150):
        opt.zero_grad()
        loss = speech.ctc_loss(model(x, lengths), target)
        loss.backward()
        opt.step()
    model.eval()
    result = speech.digit_string_wer(model, x, lengths, target, beam=4)
    assert result["greedy"] == 0.0 and result["beam"] == 0.0


def test_wer_and_confusion():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 3], [1, 2, 3]) == 1
    assert edit_distance([1, 2, 4, 3], [1, 2, 3]) == 1
    assert word_error_rate([[1, 2], [5]], [[1, 2, 3], [4]]) == pytest.approx(2 / 4)
    with pytest.raises(RnnlabError):
        word_error_rate([[1]], [[]])
    m = confusion_matrix([0, 1, 1], [0, 1, 2], 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


# -- audio in ---------------------------------------------------------------------------------------------------

def test_load_audio_any_rate_stereo(tmp_path):
    import soundfile as sf

    t = np.arange(44100) / 44100
    mono = 0.3 * np.sin(2 * np.pi * 500 * t)
    sf.write(tmp_path / "s.wav", np.stack([mono, mono], 1), 44100)
    y = sd.load_audio(tmp_path / "s.wav")
    assert abs(len(y) - 8000) <= 2 and y.ndim == 1


@pytest.mark.parametrize("kind", ["empty", "corrupt", "text", "silent", "missing"])
def test_load_audio_bad_files_raise_clear_errors(tmp_path, kind):
    import soundfile as sf

    path = tmp_path / "bad.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    elif kind == "text":
        path.write_text("this is not audio\n")
    elif kind == "silent":
        sf.write(path, np.zeros(16000), 16000)
    with pytest.raises(RnnlabError, match="expected"):
        sd.load_audio(path)


class _Echo(torch.nn.Module):
    """A 'classifier' that answers the word written in its input's first number."""

    def forward(self, x, lengths):
        return torch.nn.functional.one_hot(x[:, 0, 0].long(), len(sd.WORDS)).float()


def test_held_out_scores_per_engine_and_speaker():
    voices = [sd.Voice("espeak-ng", "en-us", "f3"), sd.Voice("flite", "rms"), sd.Voice("flite", "rms", speed=1.2)]
    labels = torch.arange(len(sd.WORDS)).repeat(3)
    said = labels.clone()
    said[len(sd.WORDS):len(sd.WORDS) + 31] = 0  # rms at its own speed: the first 31 words heard as "zero"
    x, lengths = said.view(-1, 1, 1).float(), torch.ones(len(said), dtype=torch.long)
    scores = speech.held_out_scores(_Echo(), x, lengths, labels, voices)
    assert scores["voices"] == {"espeak-ng:en-us+f3": 1.0, "flite:rms": (124 - 30) / 124}  # "zero" itself is right
    assert scores["groups"] == {"espeak-ng": 1.0, "flite": (124 - 30) / 124}
    assert scores["accuracy"] == (186 - 30) / 186 and scores["confusion"][1:31, 0].tolist() == [1] * 30
    with pytest.raises(RnnlabError, match="62 words for each of the 3 held-out voice settings"):
        speech.held_out_scores(_Echo(), x[:-1], lengths[:-1], labels[:-1], voices)


# -- the command --------------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_espeak
@needs_human
def test_recognize_a_human_file_and_refuse_bad_ones(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "rnnlab", "speech", "train", "--dry-run", "--json", "--run-dir",
                           str(run_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["human_accuracy"] <= 1 and (run_dir / "confusion_human.png").is_file()
    assert metrics["ensemble"] == 2 and metrics["mfcc_members"] == 1  # the default's members: both front ends
    assert (run_dir / "member-3" / "checkpoints" / "best.safetensors").is_file()
    by_voice = metrics["synthetic_accuracy_by_voice"]  # the held-out speakers one by one, flite's rms among them
    assert (run_dir / "confusion_synthetic.png").is_file()
    assert metrics["synthetic_accuracy_flite"] == by_voice["flite:rms"]
    done = subprocess.run([sys.executable, "-m", "rnnlab", "speech", "eval", "--run-dir", str(run_dir), "--no-peer",
                           "--trim-db", "60", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    assert scored["trim_db"] == 60 and 0 <= scored["human_accuracy"] <= 1 and "digit_string_wer" in scored
    human = sd.human_test_set()[0].path  # asterisk digits/0.wav, 8 kHz
    done = subprocess.run([sys.executable, "-m", "rnnlab", "speech", "recognize", human, "--run-dir", str(run_dir),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["word"] in sd.WORDS and 0 < answer["probability"] <= 1
    done = subprocess.run([sys.executable, "-m", "rnnlab", "speech", "recognize", human, "--run-dir", str(run_dir),
                           "--digits", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # the CTC model reads its own front end's features
    assert set(json.loads(done.stdout)["digits"].split()) <= set(sd.DIGITS)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio")
    for bad in (tmp_path / "empty.wav", tmp_path / "notes.wav"):
        done = subprocess.run([sys.executable, "-m", "rnnlab", "speech", "recognize", str(bad), "--run-dir",
                               str(run_dir)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr
