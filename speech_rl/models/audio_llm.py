"""AudioLLM: audio encoder -> projector -> causal LM fed with ``inputs_embeds``.

The prompt of utterance b is ``[prefix | audio_b | suffix]`` (embeddings), left padded
to the batch's longest prompt; the response is text tokens followed by EOS.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from speech_rl.models.llm import build_causal_lm, response_logprobs
from speech_rl.models.projector import Projector


TRANSCRIPT_MAX_NEW_TOKENS = 512    # greedy transcripts of synthesised audio (TTS rewards and eval-tts)


class AudioLLM(nn.Module):
    def __init__(self, tokenizer, encoder: nn.Module, projector: nn.Module, llm: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder, self.projector, self.llm = encoder, projector, llm
        prefix, suffix = tokenizer.prompt_ids()
        self.register_buffer("prefix_ids", torch.tensor(prefix, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(suffix, dtype=torch.long), persistent=False)

    # ---- prompt ---------------------------------------------------------------------
    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder only: (B, T, F), (B,) -> (B, T', D_enc), (B,)."""
        return self.encoder(feats, lengths)

    def prompt_embeds(self, frames: torch.Tensor, frame_lens: torch.Tensor,
                      projector: nn.Module | None = None, llm: nn.Module | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames -> left-padded prompt embeddings (B, Lp, H) and mask (B, Lp).

        ``projector`` / ``llm`` default to this model's; the reference policy passes its own.
        """
        projector = projector or self.projector
        emb_layer = (llm or self.llm).get_input_embeddings()
        audio, audio_lens = projector(frames, frame_lens)                       # (B, La, H)
        pre, suf = emb_layer(self.prefix_ids), emb_layer(self.suffix_ids)       # (P, H), (S, H)
        b, h = audio.shape[0], audio.shape[-1]
        lens = audio_lens + pre.shape[0] + suf.shape[0]
        lp = int(lens.max())
        out = audio.new_zeros(b, lp, h)
        mask = torch.zeros(b, lp, dtype=torch.long, device=audio.device)
        for i in range(b):
            seq = torch.cat([pre, audio[i, : audio_lens[i]], suf])
            out[i, lp - seq.shape[0]:] = seq
            mask[i, lp - seq.shape[0]:] = 1
        return out, mask

    def forward(self, frames: torch.Tensor, frame_lens: torch.Tensor, resp_ids: torch.Tensor | None = None,
                resp_mask: torch.Tensor | None = None, group_size: int = 1, temperature: float = 1.0,
                with_entropy: bool = False):
        """One entry point, so that FSDP unshards the projector and embeddings around it.

        Without ``resp_ids``: encoder frames (B, T', D) -> prompt embeds (B, Lp, H), mask (B, Lp).
        With ``resp_ids`` (B*G, T) / ``resp_mask`` (B*G, T): each prompt is built and run
        once, its KV cache shared by its G responses -> logp (B*G, T), entropy or None.
        """
        prompt, mask = self.prompt_embeds(frames, frame_lens)
        if resp_ids is None:
            return prompt, mask
        if resp_ids.shape[0] != prompt.shape[0] * group_size:
            raise ValueError(f"{resp_ids.shape[0]} responses for {prompt.shape[0]} prompts x group_size {group_size}")
        return self.response_logprobs(prompt, mask, resp_ids, resp_mask, temperature, with_entropy=with_entropy)

    # ---- scoring --------------------------------------------------------------------
    def response_logprobs(self, prompt: torch.Tensor, prompt_mask: torch.Tensor, resp_ids: torch.Tensor,
                          resp_mask: torch.Tensor, temperature: float = 1.0, llm: nn.Module | None = None,
                          with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``speech_rl.models.llm.response_logprobs`` under ``llm`` (default: this model's)."""
        return response_logprobs(llm or self.llm, prompt, prompt_mask, resp_ids, resp_mask, temperature, with_entropy)

    @torch.no_grad()
    def transcribe(self, feats: torch.Tensor, feat_lens: torch.Tensor, engine, params) -> list[str]:
        """Transcripts of a batch (B, T, F) by ``engine`` (whose weights mirror this model's LM)
        with sampling ``params`` (greedy for temperature 0)."""
        frames, lens = self.encode(feats, feat_lens)
        prompt, mask = self(frames, lens)
        return [self.tokenizer.decode(t) for t in engine.generate(prompt, mask, 1, params).tokens]

    @torch.no_grad()
    def transcribe_waveforms(self, waves: list[torch.Tensor], engine, params=None, sample_rate: int = 16000,
                             batch_size: int = 16) -> list[str]:
        """Transcripts of waveforms (each (n,) float at ``sample_rate``), in batches of
        ``batch_size``, through the same log-mel front end the ASR data module uses; ``params``
        default: greedy, up to ``TRANSCRIPT_MAX_NEW_TOKENS`` (the one home of the recogniser's
        decode length wherever speech-rl judges audio it made). Clips
        shorter than one analysis window (400 samples) get a single silent frame (and so,
        usually, an empty transcript) instead of failing the batch."""
        from speech_rl.data.features import LogMel, pad_features

        if params is None:
            from speech_rl.engines import SamplingParams

            params = SamplingParams(max_new_tokens=TRANSCRIPT_MAX_NEW_TOKENS, temperature=0.0)
        if sample_rate != 16000:
            raise ValueError(f"transcribe_waveforms: audio at {sample_rate} Hz, the ASR front end reads 16000 Hz "
                             "(resample first)")
        from speech_rl.data.dataset import encoder_input

        dev = next(self.parameters()).device
        raw = encoder_input(self.encoder) == "waveform"
        logmel = None if raw else LogMel(sample_rate=sample_rate, n_mels=self.encoder.n_mels).to(dev)
        out: list[str] = []
        for s in range(0, len(waves), batch_size):
            if raw:
                feats = [torch.as_tensor(w, dtype=torch.float32, device=dev).reshape(-1, 1) if len(w)
                         else torch.zeros(1, 1, device=dev) for w in waves[s:s + batch_size]]
            else:
                feats = [logmel(torch.as_tensor(w, dtype=torch.float32, device=dev)) if len(w) >= logmel.n_fft
                         else torch.zeros(1, logmel.n_mels, device=dev) for w in waves[s:s + batch_size]]
            x, lens = pad_features(feats)
            out += self.transcribe(x, lens.to(dev), engine, params)
        return out

    def target_ids(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> padded target ids with EOS (N, T) and mask (N, T)."""
        seqs = [self.tokenizer.encode(s) + [self.tokenizer.eos_id] for s in texts]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), self.tokenizer.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(seqs), t, dtype=torch.float32, device=device)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, device=device)
            mask[i, : len(s)] = 1
        return ids, mask


def build_audio_llm(tokenizer: Any = None, encoder: Any = None, llm: dict | None = None,
                    projector: dict | None = None, init_from: str | None = None, lora: Mapping | None = None,
                    family: str | None = None, **hf) -> AudioLLM:
    """Build from config: ``tokenizer`` / ``encoder`` are Hydra ``_target_`` dicts (or
    objects), ``llm`` the kwargs of ``build_causal_lm``, ``projector`` of ``Projector``.
    Or ``family`` (``qwen2_audio``, ``qwen3_asr``, ``qwen2_5_omni``) with ``pretrained_path`` and optional
    ``prompt`` / ``eos`` / ``gradient_checkpointing``: a local HF audio LLM of that family,
    all three parts from its folder (``speech_rl.models.hf_audio``).
    ``init_from`` loads AudioLLM weights from a speech-rl checkpoint or a state-dict file.
    ``lora`` (``{r, alpha, dropout, target_modules}``; ``r: 0`` is off) then puts LoRA
    adapters on the LM (``speech_rl.models.lora``): its base weights freeze."""
    if family is not None:
        extra = [k for k, v in {"tokenizer": tokenizer, "encoder": encoder, "llm": llm, "projector": projector}.items()
                 if v is not None]
        if extra:
            raise ValueError(f"model.family={family!r} takes its parts from pretrained_path; drop model.{extra}")
        from speech_rl.models.hf_audio import build_hf_audio_llm

        model = build_hf_audio_llm(family, **hf)
        config = {"family": family, **hf}
    else:
        if hf:
            raise TypeError(f"build_audio_llm: {sorted(hf)} apply to model.family models only")
        if tokenizer is None or encoder is None or llm is None:
            raise ValueError("model needs tokenizer, encoder and llm (or family + pretrained_path)")
        tok = instantiate(tokenizer) if isinstance(tokenizer, dict) or hasattr(tokenizer, "_target_") else tokenizer
        enc = instantiate(encoder) if isinstance(encoder, dict) or hasattr(encoder, "_target_") else encoder
        lm = build_causal_lm(vocab_size=tok.vocab_size, **dict(llm))
        if hasattr(lm, "audio_projector"):                 # an LM that reads audio its own way (WhisperCrossLM)
            proj = lm.audio_projector(enc.d_model, **dict(projector or {}))
        else:
            proj = Projector(enc.d_model, lm.get_input_embeddings().embedding_dim, **dict(projector or {}))
        model = AudioLLM(tok, enc, proj, lm)
        parts = {"tokenizer": tokenizer, "encoder": encoder, "llm": llm, "projector": projector}
        config = parts if all(isinstance(v, Mapping) or v is None for v in parts.values()) else None
    if init_from:
        load_audio_llm_weights(model, init_from, config)
    if lora and int(lora.get("r") or 0) > 0:
        from speech_rl.models.lora import apply_lora

        model.llm = apply_lora(model.llm, **dict(lora))
    return model


def load_audio_llm_weights(model: AudioLLM, path: str, config: Mapping | None = None) -> None:
    """Load weights saved by speech-rl (a Lightning checkpoint whose ``policy.*`` keys are
    the AudioLLM, or a plain state dict). Shape mismatches are named; with ``config``
    (``build_audio_llm``'s model config), settings that differ from the checkpoint's are
    logged as a warning."""
    from speech_rl.checkpoint import load_module_weights

    load_module_weights(model, path, "policy", "model", config=config)


def read_checkpoint(checkpoint: str | Path) -> dict:
    """A speech-rl checkpoint file, read once (on CPU) for ``load_policy`` and ``load_ctc_head``."""
    p = Path(checkpoint)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return torch.load(p, map_location="cpu", weights_only=False)


def load_policy(checkpoint: str | Path, ckpt: dict | None = None) -> AudioLLM:
    """Rebuild the AudioLLM stored in a speech-rl checkpoint (from its hparams) and load its
    weights; ``ckpt``: the file's contents when already read (``read_checkpoint``)."""
    ckpt = read_checkpoint(checkpoint) if ckpt is None else ckpt
    hp = ckpt.get("hyper_parameters", {})
    if "model" not in hp:
        raise ValueError(f"checkpoint {checkpoint} has no speech-rl model hyper-parameters (hyper_parameters.model)")
    from speech_rl.checkpoint import load_module_state
    from speech_rl.models.lora import fill_frozen, frozen_base_names

    base_dropped = bool((ckpt.get("speech_rl") or {}).get("lora_base_dropped"))
    init_from = hp["model"].get("init_from") if base_dropped else None
    if base_dropped and not (init_from is None or Path(init_from).is_file()):
        raise FileNotFoundError(f"checkpoint {checkpoint} holds LoRA adapters without their base, which came from "
                                f"model.init_from {init_from}: that file does not exist")
    policy = build_audio_llm(**dict(hp["model"], init_from=init_from))
    if base_dropped:
        fill_frozen(ckpt["state_dict"], policy, frozen_base_names(policy, policy.llm), prefix="policy.")
    load_module_state(policy, ckpt, checkpoint, "policy", "model")
    return policy.eval()
