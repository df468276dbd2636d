"""Whisper weights from a CTranslate2 model folder (what faster-whisper loads) as a
Hugging Face ``WhisperForConditionalGeneration``.

CTranslate2 stores a model as one ``model.bin``: a header (binary version, spec name,
revision), then named variables (rank, dims, dtype id, bytes) and aliases. Its Whisper
converter (``ctranslate2/converters/transformers.py``, ``WhisperLoader``) fuses the
attention projections: self-attention ``linear_0`` = [q; k; v] (k has no bias in HF, CT2
stores zeros), cross-attention ``linear_0`` = q and ``linear_1`` = [k; v]. This module
undoes that mapping; the converted model's greedy transcripts equal faster-whisper's on
the same audio (tested, ``tests/models/test_whisper_ct2.py``).

Only float weights are read (float32 / float16 / bfloat16 files: what CTranslate2 writes
unless the model was converted with ``--quantization int8``); an int8 file is refused with
a message, since its per-row scales would need a second code path nobody here can test.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

# CTranslate2's DataType enum order (include/ctranslate2/types.h; specs/model_spec.py)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


def read_ct2_variables(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """``model.bin`` -> (spec name, {variable name: array}); aliases resolved to their target.

    Arrays view the file's bytes (read-only); bfloat16 variables come back as float32.
    """
    path = Path(path)
    buf = path.read_bytes()
    off = 0

    def take(fmt: str):
        nonlocal off
        (v,) = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal off
        n = take("H")
        s = buf[off: off + n - 1].decode("utf-8")
        off += n
        return s

    version = take("I")
    if version < 4:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is older than 4 (no dtype field); "
                         "re-convert the model with a current ct2-transformers-converter")
    spec = string()
    take("I")                                                   # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        dims = [take("I") for _ in range(take("B"))]
        type_id, nbytes = take("B"), take("I")
        raw = buf[off: off + nbytes]
        off += nbytes
        if type_id == _BF16:
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif type_id in _CT2_DTYPES:
            arr = np.frombuffer(raw, dtype=_CT2_DTYPES[type_id])
        else:
            raise ValueError(f"{path}: variable {name!r} has an unknown CTranslate2 dtype id {type_id}")
        out[name] = arr.reshape(dims)
    for _ in range(take("I")):
        alias, target = string(), string()
        out[alias] = out[target]
    return spec, out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _linear(sd: dict, dst: str, v: dict, src: str, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = _t(v[f"{src}/weight"])
    if bias:
        sd[f"{dst}.bias"] = _t(v[f"{src}/bias"])


def _norm(sd: dict, dst: str, v: dict, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = _t(v[f"{src}/gamma"]), _t(v[f"{src}/beta"])


def _split_qkv(sd: dict, dst: str, v: dict, src: str, parts: tuple[str, ...]) -> None:
    w, b = _t(v[f"{src}/weight"]), _t(v[f"{src}/bias"])
    for name, wi, bi in zip(parts, w.chunk(len(parts)), b.chunk(len(parts))):
        sd[f"{dst}.{name}.weight"] = wi
        if name != "k_proj":                                   # HF Whisper's k_proj has no bias
            sd[f"{dst}.{name}.bias"] = bi


def _self_attention_and_ffn(sd: dict, dst: str, v: dict, src: str) -> None:
    """The parts encoder and decoder layers share: fused self-attention, its norm, the FFN."""
    _split_qkv(sd, f"{dst}.self_attn", v, f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
    _linear(sd, f"{dst}.self_attn.out_proj", v, f"{src}/self_attention/linear_1")
    _norm(sd, f"{dst}.self_attn_layer_norm", v, f"{src}/self_attention/layer_norm")
    _linear(sd, f"{dst}.fc1", v, f"{src}/ffn/linear_0")
    _linear(sd, f"{dst}.fc2", v, f"{src}/ffn/linear_1")
    _norm(sd, f"{dst}.final_layer_norm", v, f"{src}/ffn/layer_norm")


def _layers(v: dict, side: str) -> int:
    return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})


def whisper_config_from_ct2(v: dict[str, np.ndarray], config_json: dict | None = None):
    """A ``WhisperConfig`` with the shapes of CT2 variables ``v``."""
    from transformers import WhisperConfig

    d_model = v["encoder/conv1/weight"].shape[0]
    cfg = config_json or {}
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0], num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model, encoder_layers=_layers(v, "encoder"), decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        suppress_tokens=cfg.get("suppress_ids"), begin_suppress_tokens=cfg.get("suppress_ids_begin"))


def ct2_to_hf_state_dict(v: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CT2 Whisper variables -> a ``WhisperForConditionalGeneration`` state dict (float32)."""
    if v["encoder/conv1/weight"].dtype == np.int8:
        raise ValueError("int8-quantised CTranslate2 weights are not supported: use a float16/float32 model.bin "
                         "(ct2-transformers-converter without --quantization int8)")
    sd: dict[str, torch.Tensor] = {}
    e, d = "model.encoder", "model.decoder"
    for i in (1, 2):
        _linear(sd, f"{e}.conv{i}", v, f"encoder/conv{i}")
    sd[f"{e}.embed_positions.weight"] = _t(v["encoder/position_encodings/encodings"])
    _norm(sd, f"{e}.layer_norm", v, "encoder/layer_norm")
    for i in range(_layers(v, "encoder")):
        _self_attention_and_ffn(sd, f"{e}.layers.{i}", v, f"encoder/layer_{i}")
    sd[f"{d}.embed_tokens.weight"] = _t(v["decoder/embeddings/weight"])
    sd[f"{d}.embed_positions.weight"] = _t(v["decoder/position_encodings/encodings"])
    _norm(sd, f"{d}.layer_norm", v, "decoder/layer_norm")
    for i in range(_layers(v, "decoder")):
        s, t = f"decoder/layer_{i}", f"{d}.layers.{i}"
        _self_attention_and_ffn(sd, t, v, s)
        _linear(sd, f"{t}.encoder_attn.q_proj", v, f"{s}/attention/linear_0")
        _split_qkv(sd, f"{t}.encoder_attn", v, f"{s}/attention/linear_1", ("k_proj", "v_proj"))
        _linear(sd, f"{t}.encoder_attn.out_proj", v, f"{s}/attention/linear_2")
        _norm(sd, f"{t}.encoder_attn_layer_norm", v, f"{s}/attention/layer_norm")
    sd["proj_out.weight"] = sd[f"{d}.embed_tokens.weight"]
    return sd


def load_whisper_from_ct2(model_dir: str | Path):
    """A CTranslate2 Whisper folder (``model.bin`` + ``config.json``) -> HF
    ``WhisperForConditionalGeneration`` in eval mode, float32."""
    from transformers import WhisperForConditionalGeneration

    model_dir = Path(model_dir)
    if not (model_dir / "model.bin").is_file():
        raise FileNotFoundError(f"{model_dir}: no model.bin (not a CTranslate2 model folder)")
    spec, v = read_ct2_variables(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{model_dir}/model.bin holds a {spec!r}, not a Whisper model")
    cj = model_dir / "config.json"
    cfg = whisper_config_from_ct2(v, json.loads(cj.read_text()) if cj.is_file() else None)
    model = WhisperForConditionalGeneration(cfg)
    missing, unexpected = model.load_state_dict(ct2_to_hf_state_dict(v), strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]      # tied to embed_tokens
    if missing or unexpected:
        raise ValueError(f"{model_dir}: CT2 -> HF Whisper mapping left missing {missing[:5]} unexpected {unexpected[:5]}")
    return model.eval()


def whisper_decoder_as_gpt2_state_dict(sd: dict[str, torch.Tensor], max_positions: int | None = None
                                       ) -> dict[str, torch.Tensor]:
    """A ``WhisperForConditionalGeneration`` state dict -> a ``GPT2LMHeadModel`` state dict
    of Whisper's text decoder **without its cross-attention**.

    The two blocks are the same maths once cross-attention is gone: pre-LN self-attention
    (q scaled by head_dim^-0.5, k without bias -> a zero bias in GPT-2's fused ``c_attn``),
    pre-LN GELU MLP, learned absolute positions, final LN, output tied to the input
    embeddings. GPT-2's ``Conv1D`` stores (in, out), so every projection is transposed.
    ``max_positions`` beyond Whisper's 448 repeats the last learned position (only a run-away
    generation reaches them; they keep it from failing, they do not make it good).
    """
    d = "model.decoder"
    n_layers = len({k.split(".")[3] for k in sd if k.startswith(f"{d}.layers.")})
    out: dict[str, torch.Tensor] = {"transformer.wte.weight": sd[f"{d}.embed_tokens.weight"].clone()}
    pos = sd[f"{d}.embed_positions.weight"]
    if max_positions and max_positions > pos.shape[0]:
        pos = torch.cat([pos, pos[-1:].expand(max_positions - pos.shape[0], -1)])
    out["transformer.wpe.weight"] = pos.clone()
    for i in range(n_layers):
        s, t = f"{d}.layers.{i}", f"transformer.h.{i}"
        q, k, v = (sd[f"{s}.self_attn.{p}_proj.weight"] for p in "qkv")
        out[f"{t}.attn.c_attn.weight"] = torch.cat([q, k, v]).t().contiguous()
        qb, vb = sd[f"{s}.self_attn.q_proj.bias"], sd[f"{s}.self_attn.v_proj.bias"]
        out[f"{t}.attn.c_attn.bias"] = torch.cat([qb, torch.zeros_like(qb), vb])
        out[f"{t}.attn.c_proj.weight"] = sd[f"{s}.self_attn.out_proj.weight"].t().contiguous()
        out[f"{t}.attn.c_proj.bias"] = sd[f"{s}.self_attn.out_proj.bias"].clone()
        for dst, src in (("ln_1", "self_attn_layer_norm"), ("ln_2", "final_layer_norm")):
            out[f"{t}.{dst}.weight"], out[f"{t}.{dst}.bias"] = sd[f"{s}.{src}.weight"], sd[f"{s}.{src}.bias"]
        for dst, src in (("c_fc", "fc1"), ("c_proj", "fc2")):
            out[f"{t}.mlp.{dst}.weight"] = sd[f"{s}.{src}.weight"].t().contiguous()
            out[f"{t}.mlp.{dst}.bias"] = sd[f"{s}.{src}.bias"].clone()
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd[f"{d}.layer_norm.weight"], sd[f"{d}.layer_norm.bias"]
    return out


def load_whisper_model(path: str | Path):
    """A Whisper model from a CTranslate2 folder (``model.bin``; ``pkg:PACKAGE/dir`` allowed)
    or a Hugging Face Whisper folder (``config.json`` + weights, loaded offline)."""
    from speech_rl.models.encoder import resolve_ct2_path

    p = Path(resolve_ct2_path(str(path)))
    if (p / "model.bin").is_file():
        return load_whisper_from_ct2(p)
    if (p / "config.json").is_file():
        from transformers import WhisperForConditionalGeneration

        return WhisperForConditionalGeneration.from_pretrained(str(p), local_files_only=True).eval()
    raise FileNotFoundError(f"{path}: neither a CTranslate2 Whisper folder (model.bin) nor a Hugging Face "
                            "Whisper folder (config.json)")


def whisper_decoder_lm(path: str | Path, max_positions: int = 1024, attn_implementation: str = "sdpa"):
    """Whisper's pretrained text decoder as a causal LM (``GPT2LMHeadModel``, float32) that
    takes ``inputs_embeds``: a real pretrained English LM with Whisper's byte-level BPE
    vocabulary, for the audio-prefix ASR (cross-attention dropped; the audio arrives as
    prompt embeddings instead). ``path`` as ``load_whisper_model``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    w = load_whisper_model(path)
    c = w.config
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=max(max_positions, c.max_target_positions),
                     n_embd=c.d_model, n_layer=c.decoder_layers, n_head=c.decoder_attention_heads,
                     n_inner=c.decoder_ffn_dim, activation_function="gelu", layer_norm_epsilon=1e-5,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=c.decoder_start_token_id,
                     eos_token_id=c.eos_token_id, tie_word_embeddings=True, use_cache=True)
    cfg._attn_implementation = attn_implementation
    lm = GPT2LMHeadModel(cfg)
    sd = whisper_decoder_as_gpt2_state_dict(w.state_dict(), cfg.n_positions)
    missing, unexpected = lm.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith(".attn.bias")]
    if missing or unexpected:
        raise ValueError(f"{path}: Whisper decoder -> GPT-2 mapping left missing {missing[:5]} unexpected {unexpected[:5]}")
    lm.tie_weights()
    return lm
