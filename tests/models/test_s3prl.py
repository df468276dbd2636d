"""s3prl upstreams as the audio encoder (extra ``ssl``). s3prl needs torchaudio, whose PyPI
wheel does not load with the CPU torch and breaks vLLM's import, so these run in an
environment of their own (``scripts/test_ssl.sh``: ``pytest -m ssl``); elsewhere they skip."""
import importlib.util

import pytest
import torch

from tests.conftest import length_learning_run

pytestmark = [pytest.mark.ssl, pytest.mark.skipif(importlib.util.find_spec("s3prl") is None,
                                                  reason="pip install -e '.[ssl]' (scripts/test_ssl.sh)")]


def _tiny_wavlm(path):
    """A randomly initialised WavLM saved the way WavLM's own checkpoints are ({cfg, model}),
    for s3prl's wavlm_local upstream."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2,
           "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 16,
           "conv_pos_groups": 4, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
           "encoder_layerdrop": 0.0, "num_buckets": 32, "max_distance": 64}
    torch.manual_seed(0)
    model = WavLM(WavLMConfig(cfg))
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return path


def test_weightless_and_local_checkpoint_upstreams_encode(tmp_path):
    from speech_rl.models.s3prl_encoder import S3PRLEncoder

    wavs, lens = torch.randn(2, 32000, 1), torch.tensor([32000, 20000])
    fbank = S3PRLEncoder("fbank")
    h, hl = fbank(wavs, lens)
    assert fbank.d_model == 240 and fbank.downsample_rate == 160            # 80 bins + deltas, 100 Hz
    assert h.shape == (2, 200, 240) and hl.tolist() == [200, 125]
    one, _ = fbank(wavs[1:, :20000], lens[1:])                              # the same alone as in a batch
    # (Kaldi framing gives 123 frames of 20000 samples; s3prl pads its 125 with copies alone, zeros in a batch)
    torch.testing.assert_close(h[1, :123], one[0, :123], atol=1e-4, rtol=1e-4)
    wavlm = S3PRLEncoder("wavlm_local", path=str(_tiny_wavlm(tmp_path / "wavlm.pt")))
    h, hl = wavlm(wavs, lens)
    assert wavlm.d_model == 64 and wavlm.downsample_rate == 320 and h.shape[-1] == 64
    assert hl.tolist() == [100, 63] and not any(p.requires_grad for p in wavlm.parameters())
    with pytest.raises(ValueError, match="data.features=waveform"):
        wavlm(torch.randn(2, 100, 80), torch.tensor([100, 80]))
    with pytest.raises(ValueError, match="encoder.path"):
        S3PRLEncoder("wavlm_local")
    with pytest.raises(ValueError, match="hidden-state layers"):
        S3PRLEncoder("wavlm_local", path=str(tmp_path / "wavlm.pt"), layer=7)


def test_grpo_learns_on_s3prl_features_and_a_local_wavlm(corpus, tmp_path):
    """The learning test of every model path with the s3prl encoder: fbank (no weights) and
    a local WavLM checkpoint; data.features=waveform feeds them samples."""
    length_learning_run(corpus, tmp_path / "fbank", "model=asr_s3prl", "data.features=waveform", "optim.lr=1e-3",
                        "algorithm.beta=0.0")
    ckpt = _tiny_wavlm(tmp_path / "wavlm.pt")
    length_learning_run(corpus, tmp_path / "wavlm", "model=asr_s3prl", "model.encoder.name=wavlm_local",
                        f"model.encoder.path={ckpt}", "model.projector.stack=2", "data.features=waveform",
                        "optim.lr=1e-3", "algorithm.beta=0.0")


def test_waveform_encoder_needs_waveform_data(corpus, tmp_path):
    from tests.conftest import run_cli

    out = run_cli("train", "experiment=asr_grpo_tiny", "model=asr_s3prl", "trainer.max_steps=1",
                  f"hydra.run.dir={tmp_path}", cwd=tmp_path, data_dir=corpus, check=False)
    assert out.returncode != 0 and "set data.features=waveform" in out.stdout + out.stderr


def test_speech_tokenizer_on_wavlm_units(corpus, tmp_path):
    """`speech-rl data tokenize --fit --upstream wavlm_local`: k-means on a local WavLM's
    hidden states (HuBERT-style units), saved without the upstream's weights and read back."""
    from speech_rl.tts.speech_tokenizer import SpeechTokenizer
    from speech_rl.tts.tokenize import read_tokens
    from tests.conftest import run_cli

    ckpt = _tiny_wavlm(tmp_path / "wavlm.pt")
    manifest = corpus / "embedded" / "train.jsonl"
    tok_file = tmp_path / "units.pt"
    run_cli("data", "tokenize", str(manifest), "--tokenizer", str(tok_file), "--fit", "--codebook-size", "16",
            "--stack", "1", "--upstream", "wavlm_local", "--upstream-path", str(ckpt), cwd=tmp_path, data_dir=corpus)
    assert "ssl." not in "".join(torch.load(tok_file, weights_only=True)["state_dict"])
    tok = SpeechTokenizer.load(tok_file)
    assert tok.frame_rate == 50.0 and tok.centroids.shape == (16, 64)
    rows = read_tokens(manifest.with_name("train.tokens.jsonl"))
    assert len(rows) == 24 and len({t for r in rows.values() for t in r}) > 4      # units in use, not one
    import soundfile as sf
    from speech_rl.data.manifest import read_manifest

    u = read_manifest(manifest)[0][0]
    wav, sr = sf.read(u.audio, dtype="float32")
    assert tok(torch.from_numpy(wav)).tolist() == rows[u.id]
