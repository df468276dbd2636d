import json

import pytest
import torch

from speech_rl.tts.speech_tokenizer import SpeechTokenizer, assign, kmeans
from tests.open_world import need_whisper


def test_kmeans_recovers_separated_blobs():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centers])
    c, inertia = kmeans(x, 3, seed=1)
    # each true centre has one fitted centroid within 0.1, and the within-cluster spread is ~2 * 0.1^2
    assert torch.cdist(centers, c).min(1).values.max() < 0.1
    assert inertia == pytest.approx(0.02, abs=0.01)
    ids, _ = assign(x, c)
    assert all(len(set(ids[i * 50:(i + 1) * 50].tolist())) == 1 for i in range(3))


def test_kmeans_keeps_every_centroid_in_use_and_rejects_too_few_points():
    x = torch.cat([torch.zeros(20, 2), torch.ones(3, 2)])       # 2 distinct points, k=4: duplicates re-seeded
    c, _ = kmeans(torch.cat([x, torch.randn(8, 2, generator=torch.Generator().manual_seed(0))]), 4)
    assert c.shape == (4, 2) and torch.isfinite(c).all()
    with pytest.raises(ValueError, match="N >= k=8"):
        kmeans(torch.zeros(5, 2), 8)


def _tone(freq, seconds=1.0, sr=16000):
    t = torch.arange(int(seconds * sr)) / sr
    return 0.5 * torch.sin(2 * torch.pi * freq * t)


def test_tokenizer_rate_determinism_and_roundtrip(tmp_path):
    # two-tone utterances: frames are mean-normalised per utterance, so only what changes within
    # an utterance can be told apart (a steady tone alone normalises to silence)
    pairs = [(200, 800), (400, 1600), (800, 3200), (300, 2400), (1600, 500)]
    wavs = [torch.cat([_tone(f, 0.5), _tone(g, 0.5)]) + 0.01 * torch.randn(16000, generator=torch.Generator().manual_seed(i))
            for i, (f, g) in enumerate(pairs)]
    a, b = SpeechTokenizer(codebook_size=8), SpeechTokenizer(codebook_size=8)
    a.fit(wavs, seed=3)
    b.fit(wavs, seed=3)
    assert torch.equal(a.centroids, b.centroids)
    ids = a(wavs[0])
    assert ids.dtype == torch.long and ids.shape == ((16000 // 160 + 1) // 4,) and a.frame_rate == 25.0
    for w in wavs:                        # 25 tokens: 12 for the first tone, 13 for the second
        t = a(w)
        assert int(t[2:10].mode().values) != int(t[15:23].mode().values), t
    a.save(tmp_path / "tok.pt")
    c = SpeechTokenizer.load(tmp_path / "tok.pt")
    assert torch.equal(c(wavs[2]), a(wavs[2]))


def test_tokenizer_errors_name_the_problem(tmp_path):
    tok = SpeechTokenizer(codebook_size=4)
    with pytest.raises(RuntimeError, match="no codebook yet"):
        tok(_tone(300))
    with pytest.raises(ValueError, match="mono waveform"):
        tok.frames(torch.zeros(2, 16000))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpeechTokenizer.load(tmp_path / "missing.pt")


def test_tokenize_cli_writes_tokens_beside_the_manifest(tmp_path):
    from speech_rl.cli import main
    from speech_rl.data.synth import synth_corpus
    from speech_rl.tts.tokenize import read_tokens, tokens_path

    man = synth_corpus(tmp_path / "c", {"train": 6, "val": 2}, seed=0)
    tok = tmp_path / "tok.pt"
    assert main(["data", "tokenize", str(man["train"]), str(man["val"]), "--tokenizer", str(tok), "--fit",
                 "--codebook-size", "16"]) == 0
    toks = read_tokens(tokens_path(man["train"]))
    rows = [json.loads(x) for x in man["train"].read_text().splitlines()]
    assert list(toks) == [r["id"] for r in rows]
    for r in rows:                        # 25 tokens a second, all in the codebook
        assert abs(len(toks[r["id"]]) - 25 * r["duration"]) <= 1 and max(toks[r["id"]]) < 16
    assert len(read_tokens(tokens_path(man["val"]))) == 2
    # reuse the fitted tokenizer: same tokens again
    assert main(["data", "tokenize", str(man["train"]), "--tokenizer", str(tok)]) == 0
    assert read_tokens(tokens_path(man["train"])) == toks
    bad = tmp_path / "bad.tokens.jsonl"
    bad.write_text('{"id": "a", "tokens": [1, -2]}\n')
    with pytest.raises(ValueError, match="bad.tokens.jsonl:1: not a token row"):
        read_tokens(bad)


@need_whisper
def test_whisper_upstream_tokens_at_50_hz_fit_the_mel_frames(tmp_path):
    """upstream=whisper: Whisper encoder states, 2 mel frames per token (a flow decoder with up=2
    has mel for every token, odd lengths included), a layer cut changes the features, and the
    saved file (codebook + config, no encoder weights) tokenises alike."""
    wavs = [torch.cat([_tone(f, 0.37), _tone(g, 0.41)]) for f, g in ((300, 1200), (700, 2500), (1500, 400))]
    full = SpeechTokenizer(codebook_size=6, stack=1, upstream="whisper")
    assert full.frame_rate == 50.0
    for w in wavs + [_tone(440, 0.5)[:8161]]:
        n_mel = w.numel() // 160 + 1
        assert full.frames(w).shape == (n_mel // 2, 384)
    cut = SpeechTokenizer(codebook_size=6, stack=1, upstream="whisper", upstream_layer=2)
    assert not torch.allclose(cut.features(wavs[0]), full.features(wavs[0]))
    cut.fit(wavs, seed=0)
    cut.save(tmp_path / "w.pt")
    again = SpeechTokenizer.load(tmp_path / "w.pt")
    assert again.config()["upstream_layer"] == 2 and torch.equal(again(wavs[1]), cut(wavs[1]))
    # fit keeps each code's mean log-mel (2 mel frames a token): the mean of the mean-removed
    # mel frame pairs its tokens cover, recomputed here by hand for every code seen
    assert cut.mels_per_token == 2 and torch.equal(again.code_mels, cut.code_mels)
    pairs, ids = [], []
    for w in wavs:
        m = cut.mel(w)
        m = m - m.mean(0)
        i = cut(w)
        pairs.append(m[: 2 * i.numel()].reshape(i.numel(), 160))
        ids.append(i)
    pairs, ids = torch.cat(pairs), torch.cat(ids)
    for c in ids.unique():
        assert torch.allclose(cut.code_mels[c], pairs[ids == c].mean(0), atol=1e-5)
    assert cut.centroid_features(ids[:5]).shape == (10, 80)
    with pytest.raises(ValueError, match="no per-code log-mel"):
        SpeechTokenizer(codebook_size=6, stack=1, upstream="whisper").centroid_features(ids[:5])
    with pytest.raises(ValueError, match="layers 1..4"):
        SpeechTokenizer(stack=1, upstream="whisper", upstream_layer=7)
    with pytest.raises(ValueError, match="80 mels at hop 160"):
        SpeechTokenizer(stack=1, upstream="whisper", n_mels=64)


def test_tts_data_refuses_tokens_beyond_its_codebook(tmp_path):
    """Tokens live beside their manifest whatever tokenizer wrote them: tokens of a larger
    codebook (another tokenizer's file) stop with the file's name instead of being clamped."""
    import soundfile as sf

    from datamodules.tts import TTSDataModule
    from speech_rl.data.manifest import read_manifest, write_manifest
    from speech_rl.tts.tokenize import tokens_path

    sf.write(tmp_path / "a.wav", _tone(300).numpy(), 16000)
    man = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "audio": "a.wav", "text": "hi", "speaker": "s"}])
    write_manifest(tokens_path(man), [{"id": "a", "tokens": [3, 40, 7], "frame_rate": 25.0}])
    utts = read_manifest(man)[0]
    assert len(TTSDataModule(str(man), codebook_size=64).make_dataset(utts, str(man))) == 1
    with pytest.raises(ValueError, match=r"m.tokens.jsonl holds token id 40 but data.codebook_size is 16"):
        TTSDataModule(str(man), codebook_size=16).make_dataset(utts, str(man))
