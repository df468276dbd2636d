"""Audio LLMs as Hugging Face ships them (``model=hf_audio``): a local checkpoint folder of
one of the families below, split into the three parts speech-rl trains.

An HF audio LLM (``Qwen2AudioForConditionalGeneration``, ``Qwen3ASRForConditionalGeneration``,
``Qwen2_5OmniThinkerForConditionalGeneration``)
holds an audio tower, a projector, a text model and an LM head under fixed attribute paths.
``build_hf_audio_llm`` loads it with ``from_pretrained`` (local files only) and rebuilds it as
an ``AudioLLM``:

* ``encoder``: ``HFAudioTower``: log-mel (B, T, F) + lengths -> frames (B, T', D) + lengths, run
  the way the family's own ``forward`` runs its tower (padding, attention mask, packing);
* ``projector``: ``HFProjector``: the family's projector, frame by frame;
* ``llm``: the family's text model and LM head inside the plain causal-LM class of its text
  config (``Qwen2ForCausalLM`` for Qwen2-Audio, ``Qwen3ForCausalLM`` for Qwen3-ASR): the same
  modules, no copy, so every engine (torch, vLLM from ``save_pretrained``) serves it.

The prompt is the family's text with the audio placeholder replaced by the audio embeddings
(``[prefix | audio | suffix]``): what the family's processor + ``forward`` build, where the
processor repeats the placeholder token once per audio frame and ``forward`` scatters the
frames over them. ``export_hf`` puts trained weights back into the family's class and writes a
folder its ``from_pretrained`` loads.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def _qwen2_audio_encode(tower: nn.Module, feats: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-Audio's tower as ``Qwen2AudioModel.forward`` runs it: features padded / cut to the
    fixed window (2 x max_source_positions frames, 30 s), padded frames masked out of
    self-attention, 2x average pooling. feats (B, T, F) -> (B, T'', D), lengths'' (B,)."""
    from transformers.masking_utils import create_bidirectional_mask

    window = 2 * tower.config.max_source_positions
    x = feats.transpose(1, 2)                                                    # (B, F, T)
    x = nn.functional.pad(x, (0, window - x.shape[-1])) if x.shape[-1] < window else x[..., :window]
    lengths = lengths.clamp(max=window)
    conv_lens, out_lens = tower._get_feat_extract_output_lengths(lengths)
    t_conv = window // 2
    mask2d = (torch.arange(t_conv, device=x.device)[None] < conv_lens[:, None]).long()
    dummy = torch.zeros(x.shape[0], t_conv, 1, dtype=x.dtype, device=x.device)
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask2d)
    out = tower(x, attention_mask=mask).last_hidden_state                       # (B, window / 4, D)
    return out, out_lens.clamp(max=out.shape[1])


def _qwen3_asr_encode(tower: nn.Module, feats: torch.Tensor, lengths: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3-ASR's tower: features padded to whole chunks of 2 x n_window frames with their
    mask; the tower returns the valid frames of the batch packed, (sum of lengths'', D), which
    are unpacked here. feats (B, T, F) -> (B, T'', D), lengths'' (B,)."""
    b = feats.shape[0]
    chunk = 2 * tower.n_window
    x = feats.transpose(1, 2)                                                    # (B, F, T)
    t = -(-x.shape[-1] // chunk) * chunk
    x = nn.functional.pad(x, (0, t - x.shape[-1]))
    mask = (torch.arange(t, device=x.device)[None] < lengths[:, None]).long()   # (B, T)
    packed = tower(input_features=x * mask[:, None], input_features_mask=mask).last_hidden_state
    out_lens = tower._post_cnn_length(mask.view(b, t // chunk, chunk).sum(-1)).sum(-1)   # (B,)
    if int(out_lens.sum()) != packed.shape[0]:
        raise RuntimeError(f"Qwen3-ASR tower returned {packed.shape[0]} frames for lengths {out_lens.tolist()}")
    rows = torch.split(packed, out_lens.tolist())
    return nn.utils.rnn.pad_sequence(rows, batch_first=True), out_lens


def _qwen2_5_omni_encode(tower: nn.Module, feats: torch.Tensor, lengths: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-Omni's tower as its thinker's ``get_audio_features`` runs it: the valid frames of
    the batch packed along time (F, sum T), chunked windows inside; out: the valid frames,
    already projected to the LM width (the tower ends in its projection), unpacked here.
    feats (B, T, F) -> (B, T'', H), lengths'' (B,)."""
    keep = torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]      # (B, T)
    packed = feats[keep].T                                                                  # (F, sum T)
    conv_lens, out_lens = tower._get_feat_extract_output_lengths(lengths)
    out = tower(packed, feature_lens=lengths, aftercnn_lens=conv_lens).last_hidden_state
    if int(out_lens.sum()) != out.shape[0]:
        raise RuntimeError(f"Qwen2.5-Omni tower returned {out.shape[0]} frames for lengths {out_lens.tolist()}")
    return nn.utils.rnn.pad_sequence(torch.split(out, out_lens.tolist()), batch_first=True), out_lens


@dataclass(frozen=True)
class AudioFamily:
    """Where a family's parts live in its HF class and how its tower runs. Paths are tried in
    order (transformers releases move them: 5.19's thinker holds ``audio_tower`` and its text
    model as ``model``, 5.24's ``model.audio_tower`` and ``model.language_model``)."""
    hf_class: str                 # the transformers class of the whole model
    tower: tuple[str, ...]        # attribute paths of the audio tower
    projector: tuple[str, ...]    # ... of the projector (empty: the tower projects itself)
    text_model: tuple[str, ...]   # ... of the text model
    lm_head: tuple[str, ...]      # ... of the LM head
    encode: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    prompt: str                   # default prompt; ``{audio}`` marks where the audio embeddings go
    eos: str                      # the token that ends a transcript
    frames_dim: str = "d_model"   # the tower config's field of its output width
    lm_class: str | None = None   # plain causal-LM class when the text config has none of its own


FAMILIES: dict[str, AudioFamily] = {
    "qwen2_audio": AudioFamily(
        "Qwen2AudioForConditionalGeneration", ("model.audio_tower",), ("model.multi_modal_projector",),
        ("model.language_model",), ("lm_head",), _qwen2_audio_encode,
        # Qwen2-Audio-7B (base): the ASR prompt of its model card
        "<|audio_bos|>{audio}<|audio_eos|>Detect the language and recognize the speech: <|en|>", "<|endoftext|>"),
    "qwen3_asr": AudioFamily(
        "Qwen3ASRForConditionalGeneration", ("model.audio_tower",), ("model.multi_modal_projector",),
        ("model.language_model",), ("lm_head",), _qwen3_asr_encode,
        # the processor's chat template, with the language forced the way its processor forces it
        "<|im_start|>user\n<|audio_start|>{audio}<|audio_end|><|im_end|>\n<|im_start|>assistant\n"
        "language English<asr_text>", "<|im_end|>"),
    # the thinker (text out) of Qwen2.5-Omni; its text model's 3-D rotary positions are one
    # running index for audio + text prompts, i.e. plain RoPE: it serves as a Qwen2 LM
    "qwen2_5_omni": AudioFamily(
        "Qwen2_5OmniThinkerForConditionalGeneration", ("model.audio_tower", "audio_tower"), (),
        ("model.language_model", "model"), ("lm_head",), _qwen2_5_omni_encode,
        "<|im_start|>system\nYou are a speech recognition model.<|im_end|>\n<|im_start|>user\n<|audio_bos|>{audio}"
        "<|audio_eos|>Transcribe the English audio into text.<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>",
        frames_dim="output_dim", lm_class="Qwen2ForCausalLM"),
}


def family(name: str) -> AudioFamily:
    if name not in FAMILIES:
        raise ValueError(f"model.family={name!r} is not a supported audio LLM family; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def _path(root: nn.Module, paths: tuple[str, ...], what: str) -> str:
    """The first of ``paths`` that names a submodule of ``root``."""
    for path in paths:
        m = root
        try:
            for part in path.split("."):
                m = getattr(m, part)
        except AttributeError:
            continue
        if isinstance(m, nn.Module) and (what != "text model" or hasattr(m, "embed_tokens")):
            return path
    raise ValueError(f"{type(root).__name__} has no {what} at {list(paths)} (a transformers release that moved it?)")


def _get(root: nn.Module, paths: tuple[str, ...], what: str) -> nn.Module:
    return root.get_submodule(_path(root, paths, what))


class HFAudioTower(nn.Module):
    """A family's audio tower behind the encoder contract: feats (B, T, F), lengths (B,) ->
    frames (B, T', D), lengths' (B,). Frozen (no parameter requires grad, as the modules'
    ``freeze_encoder`` leaves it) it runs without autograd and without dropout."""

    def __init__(self, tower: nn.Module, encode: Callable, frames_dim: str = "d_model"):
        super().__init__()
        self.tower, self._encode = tower, encode
        self.n_mels = int(tower.config.num_mel_bins)
        self.d_model = int(getattr(tower.config, frames_dim))

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.tower.parameters())

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frozen = self.frozen
        if frozen and self.tower.training:
            self.tower.eval()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self._encode(self.tower, feats, lengths)


class HFProjector(nn.Module):
    """A family's projector, frame by frame: (B, T', D), (B,) -> (B, T', H), (B,)."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(frames), lengths


def causal_lm_of(text_model: nn.Module, lm_head: nn.Module, lm_class: str | None = None) -> nn.Module:
    """The plain HF causal LM of ``text_model``'s config (``AutoModelForCausalLM``; or
    ``lm_class`` with the config's fields and plain RoPE) holding ``text_model`` and ``lm_head``
    themselves (built on the meta device, then given the real modules: no second copy)."""
    import copy

    import transformers
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(text_model.config)
    attn = cfg._attn_implementation
    if lm_class:
        cls = getattr(transformers, lm_class)
        fields = {k: v for k, v in cfg.to_dict().items() if k not in ("model_type", "architectures")}
        rope = dict(fields.get("rope_parameters") or {})
        rope.pop("mrope_section", None)
        rope.pop("mrope_interleaved", None)
        fields["rope_parameters"] = {**rope, "rope_type": "default"}
        cfg = cls.config_class(**fields)
    cfg.tie_word_embeddings = lm_head.weight is text_model.get_input_embeddings().weight
    with torch.device("meta"):
        lm = (cls(cfg) if lm_class else AutoModelForCausalLM.from_config(cfg, attn_implementation=attn))
    lm.config._attn_implementation = attn
    lm.model, lm.lm_head = text_model, lm_head
    return lm


def prompt_parts(prompt: str) -> tuple[str, str]:
    """A prompt template -> (text before, text after) its one ``{audio}`` marker."""
    if prompt.count("{audio}") != 1:
        raise ValueError(f"model.prompt must hold '{{audio}}' exactly once (where the audio goes), got {prompt!r}")
    pre, suf = prompt.split("{audio}")
    return pre, suf


def load_hf_audio_model(name: str, pretrained_path: str, attn_implementation: str = "sdpa") -> nn.Module:
    """The family's HF class ``from_pretrained(pretrained_path, local_files_only=True)``, float32."""
    import transformers

    fam = family(name)
    if not pretrained_path or not Path(pretrained_path).is_dir():
        raise FileNotFoundError(f"model.pretrained_path {pretrained_path!r} is not a folder (a local "
                                f"{fam.hf_class} checkpoint: config.json, weights, tokenizer)")
    cls = getattr(transformers, fam.hf_class)
    return cls.from_pretrained(pretrained_path, local_files_only=True, dtype=torch.float32,
                               attn_implementation=attn_implementation)


def build_hf_audio_llm(family_name: str, pretrained_path: str, prompt: str | None = None, eos: str | None = None,
                       gradient_checkpointing: bool = False,
                       attn_implementation: str = "sdpa"):
    """An ``AudioLLM`` over the parts of a local HF audio LLM (see the module docstring);
    ``prompt`` / ``eos`` default to the family's."""
    from speech_rl.data.tokenizer import HFTokenizer
    from speech_rl.models.audio_llm import AudioLLM

    fam = family(family_name)
    hf = load_hf_audio_model(family_name, pretrained_path, attn_implementation)
    prefix, suffix = prompt_parts(prompt or fam.prompt)
    tok = HFTokenizer(pretrained_path, prefix=prefix, suffix=suffix, eos=eos or fam.eos)
    lm = causal_lm_of(_get(hf, fam.text_model, "text model"), _get(hf, fam.lm_head, "LM head"), fam.lm_class)
    if lm.get_input_embeddings().num_embeddings < tok.vocab_size:
        raise ValueError(f"{pretrained_path}: the tokenizer has {tok.vocab_size} tokens, the LM "
                         f"{lm.get_input_embeddings().num_embeddings} embeddings")
    if gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    proj = _get(hf, fam.projector, "projector") if fam.projector else nn.Identity()
    return AudioLLM(tok, HFAudioTower(_get(hf, fam.tower, "audio tower"), fam.encode, fam.frames_dim),
                    HFProjector(proj), lm)


def hf_state_dict(policy, family_name: str, hf: nn.Module) -> dict[str, torch.Tensor]:
    """The policy's weights under the names of the family's HF class ``hf`` (LoRA adapters merged)."""
    from speech_rl.models.lora import is_lora, merged_named_parameters

    fam = family(family_name)
    sd = {f"{_path(hf, fam.tower, 'audio tower')}.{k}": v for k, v in policy.encoder.tower.state_dict().items()}
    if fam.projector:
        sd.update({f"{_path(hf, fam.projector, 'projector')}.{k}": v
                   for k, v in policy.projector.proj.state_dict().items()})
    text, head_path = _path(hf, fam.text_model, "text model"), _path(hf, fam.lm_head, "LM head")
    lm = dict(merged_named_parameters(policy.llm)) if is_lora(policy.llm) else policy.llm.state_dict()
    for k, v in lm.items():
        head, _, rest = k.partition(".")
        if head not in ("model", "lm_head"):
            raise ValueError(f"unexpected LM weight {k!r} (expected model.* / lm_head.*)")
        sd[f"{text if head == 'model' else head_path}.{rest}"] = v
    return sd


def _kept_prefixes(hf: nn.Module, family_name: str) -> list[str]:
    """State-dict prefixes of the family's parts speech-rl does not train (Omni's vision tower)."""
    return [n + "." for n in ("visual", "model.visual") if _has(hf, n)]


def _has(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


def export_hf(policy, model_cfg: Mapping, out: str | Path, dtype: str = "float32") -> Path:
    """Write ``policy`` (an ``AudioLLM`` built by ``build_hf_audio_llm`` from ``model_cfg``) as
    a folder of its family's HF class: weights (trained, adapters merged) in ``dtype``, config,
    tokenizer and the source folder's processor files. ``out`` must not exist; it appears whole
    or not at all."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"export --hf: {out} exists; give a new folder")
    name, src = model_cfg["family"], Path(model_cfg["pretrained_path"])
    hf = load_hf_audio_model(name, str(src))
    sd = hf_state_dict(policy, name, hf)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    tied = set(getattr(hf, "all_tied_weights_keys", {}) or {})
    parts = {k.rsplit(".", 1)[0].split(".")[0] for k in sd}           # e.g. model, lm_head, audio_tower
    ours = {k for k in missing if k not in tied and any(k.startswith(p + ".") for p in parts)
            and not any(k.startswith(x) for x in _kept_prefixes(hf, name))}
    if unexpected or ours:          # parts speech-rl does not hold (a vision tower) keep the source's weights
        raise RuntimeError(f"export --hf: weights do not fit {type(hf).__name__}: missing "
                           f"{sorted(ours)[:5]}, unexpected {sorted(unexpected)[:5]}")
    hf.to(getattr(torch, dtype))
    return _write_folder(out, lambda tmp: (hf.save_pretrained(tmp, safe_serialization=True),
                                           policy.tokenizer.tok.save_pretrained(tmp)), src)


def _write_folder(out: Path, write: Callable[[Path], object], src: Path) -> Path:
    """``write(tmp)`` into a temp folder beside ``out``, add ``src``'s other files (processor,
    feature extractor, templates; not its weights), then rename it to ``out``: all or nothing."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"export --hf: {out} exists; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        for f in src.iterdir():
            if f.is_file() and not (tmp / f.name).exists() and ".safetensors" not in f.name and ".bin" not in f.name:
                shutil.copy2(f, tmp / f.name)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_hf_checkpoint(checkpoint: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """``speech-rl export CKPT OUT --hf``: the policy of a speech-rl checkpoint of a
    ``model.family`` model, written by ``export_hf``; or a TTS system's LM loaded in
    CosyVoice2's HF layout, written back as that full-vocabulary causal LM (``TTSLM.hf_lm``)."""
    from speech_rl.models.audio_llm import load_policy, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    model_cfg = (ckpt.get("hyper_parameters") or {}).get("model") or {}
    if "n_codes" in model_cfg:                          # a TTS system: its LM, in CosyVoice2's HF layout
        from speech_rl.tts.system import load_tts_system

        lm = load_tts_system(checkpoint).lm
        if lm.layout is None:
            raise ValueError(f"export --hf: {checkpoint}'s TTS LM has speech-rl's own layout; --hf writes LMs "
                             "loaded in CosyVoice2's HF layout (model.lm.speech_tokens)")
        return _write_folder(out, lambda tmp: (lm.hf_lm().to(getattr(torch, dtype)).save_pretrained(tmp),
                                               lm.tokenizer.tok.save_pretrained(tmp)), Path(lm.layout_path))
    if not model_cfg.get("family"):
        raise ValueError(f"export --hf: {checkpoint} is not of an HF audio LLM (model=hf_audio with model.family); "
                         "its model is speech-rl's own: export it without --hf")
    return export_hf(load_policy(checkpoint, ckpt), model_cfg, out, dtype)
