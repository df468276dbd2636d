"""The TTS system: TTS LM + flow-matching decoder + vocoder + token ASR, built from config.

    text, speaker --TTSLM--> acoustic tokens --FlowDecoder--> log-mel --vocoder--> waveform
    acoustic tokens (hard, or straight-through one-hot) --TokenASR--> log P(text | tokens)

One speaker list indexes both the LM's and the flow decoder's speaker embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from speech_rl.tts.flow import FlowDecoder, check_flow_temperature
from speech_rl.tts.lm import TTSLM
from speech_rl.tts.token_asr import TokenASR
from speech_rl.tts.vocoder import GriffinLimVocoder


class TTSSystem(nn.Module):
    def __init__(self, lm: TTSLM, flow: FlowDecoder, token_asr: TokenASR, vocoder: nn.Module,
                 flow_steps: int = 10, flow_temperature: float = 1.0):
        super().__init__()
        self.lm, self.flow, self.token_asr, self.vocoder = lm, flow, token_asr, vocoder
        self.flow_steps, self.flow_temperature = flow_steps, check_flow_temperature(flow_temperature)

    @property
    def speakers(self) -> list[str]:
        return self.lm.speakers

    @torch.no_grad()
    def synthesise(self, token_lists: list[list[int]], speakers: list[str], n_steps: int | None = None,
                   gen: torch.Generator | None = None, temperature: float | None = None,
                   ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Acoustic tokens -> (waveforms [(n_i,)], mel (B, Tm, M), mel_lens (B,)) through the
        flow decoder (``n_steps`` Euler steps, default ``flow_steps``; start noise scaled by
        ``temperature``, default ``flow_temperature``) and the vocoder.
        An empty token list gives an empty waveform."""
        dev = self.lm.sos.device
        lens = torch.tensor([max(len(t), 1) for t in token_lists], device=dev)
        toks = torch.zeros(len(token_lists), int(lens.max()), dtype=torch.long, device=dev)
        for i, t in enumerate(token_lists):
            if len(t):
                toks[i, : len(t)] = torch.tensor(t, device=dev)
        spk = self.lm.speaker_ids(speakers, dev)
        temp = self.flow_temperature if temperature is None else temperature
        mel, mel_lens = self.flow.sample(toks, lens, spk, n_steps or self.flow_steps, temp, gen=gen)
        hop = self.vocoder.hop_length
        wavs = []
        for i, t in enumerate(token_lists):
            if not len(t):
                wavs.append(torch.zeros(0, device=dev))
                continue
            wavs.append(self.vocoder(mel[i, : int(mel_lens[i])])[: (int(mel_lens[i]) - 1) * hop])
        return wavs, mel, mel_lens


def build_tts_system(tokenizer: Any, n_codes: int, speakers: list[str], lm: dict, flow: dict | None = None,
                     token_asr: dict | None = None, vocoder: Any = None, flow_steps: int = 10,
                     flow_temperature: float = 1.0, init_from: str | None = None, lora: dict | None = None,
                     init_parts: list[str] | None = None) -> TTSSystem:
    """From config: ``tokenizer`` a Hydra ``_target_`` dict (or object); ``lm`` the
    ``build_causal_lm`` kwargs; ``flow`` / ``token_asr`` kwargs of FlowDecoder / TokenASR;
    ``vocoder`` a ``_target_`` dict (default Griffin-Lim); ``init_from`` a speech-rl
    checkpoint whose ``tts.*`` keys are this system; ``init_parts`` (a subset of ``lm``, ``flow``,
    ``token_asr``; default all) the parts taken from it, the others keep their fresh init
    (e.g. a new, larger LM beside a trained flow decoder). ``lora`` (``{r, alpha, dropout,
    target_modules}``; ``r: 0`` is off) then puts LoRA adapters on the LM's causal LM
    (``speech_rl.models.lora``): its base weights and the prompt tables freeze."""
    tok = instantiate(tokenizer) if isinstance(tokenizer, dict) or hasattr(tokenizer, "_target_") else tokenizer
    voc = instantiate(vocoder) if isinstance(vocoder, dict) or hasattr(vocoder, "_target_") else (vocoder or GriffinLimVocoder())
    system = TTSSystem(TTSLM(tok, n_codes, list(speakers), dict(lm)),
                       FlowDecoder(n_codes, len(speakers), **dict(flow or {})),
                       TokenASR(n_codes, tok, **dict(token_asr or {})), voc, flow_steps,
                       flow_temperature)
    if init_parts is not None and not init_from:
        raise ValueError(f"model.init_parts {list(init_parts)} needs model.init_from (the checkpoint to take them from)")
    if init_from:
        load_tts_weights(system, init_from, init_parts)
    if lora and int(lora.get("r") or 0) > 0:
        from speech_rl.models.lora import apply_lora

        system.lm.llm = apply_lora(system.lm.llm, **dict(lora))
        for name, p in system.lm.named_parameters():          # only the adapters of the LM learn
            if not name.startswith("llm."):
                p.requires_grad_(False)
    return system


TTS_PARTS = ("lm", "flow", "token_asr")


def load_tts_weights(system: TTSSystem, path: str | Path, parts: list[str] | None = None) -> None:
    """Weights from a speech-rl checkpoint (``tts.*`` keys) or a plain state dict; shape
    mismatches and missing keys are named. ``parts`` (subset of ``TTS_PARTS``): load only
    those sub-modules (``tts.<part>.*`` keys of a speech-rl checkpoint)."""
    from speech_rl.checkpoint import load_module_state, load_module_weights

    if parts is None:
        load_module_weights(system, path, "tts", "TTS system")
        return
    parts = list(parts)
    bad = [x for x in parts if x not in TTS_PARTS]
    if bad or not parts:
        raise ValueError(f"model.init_parts {parts}: each must be one of {', '.join(TTS_PARTS)} (and at least one)")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init_from checkpoint {p} does not exist")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    sd = ckpt.get("state_dict", ckpt)
    for part in parts:
        if not any(k.startswith(f"tts.{part}.") for k in sd):
            raise ValueError(f"checkpoint {p} has no tts.{part}.* weights (model.init_parts asks for {part})")
        load_module_state(getattr(system, part), {"state_dict": sd}, p, f"tts.{part}", f"TTS {part}")


def load_tts_system(checkpoint: str | Path) -> TTSSystem:
    """Rebuild the TTS system stored in a speech-rl checkpoint (from its hparams) and load
    its weights; in eval mode."""
    p = Path(checkpoint)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters", {})
    if "model" not in hp or "n_codes" not in hp["model"]:
        raise ValueError(f"checkpoint {p} has no speech-rl TTS model hyper-parameters (hyper_parameters.model)")
    base_dropped = bool((ckpt.get("speech_rl") or {}).get("lora_base_dropped"))
    init_from = hp["model"].get("init_from") if base_dropped else None
    if base_dropped and not (init_from and Path(init_from).is_file()):
        raise FileNotFoundError(f"checkpoint {p} holds LoRA adapters without their base, which came from "
                                f"model.init_from {init_from}: that file does not exist")
    system = build_tts_system(**dict(hp["model"], init_from=init_from,
                                     init_parts=hp["model"].get("init_parts") if init_from else None))
    if base_dropped:
        from speech_rl.checkpoint import load_module_state
        from speech_rl.models.lora import fill_frozen, frozen_base_names

        fill_frozen(ckpt["state_dict"], system, frozen_base_names(system, system.lm.llm), prefix="tts.")
        load_module_state(system, ckpt, p, "tts", "TTS system")
    else:
        load_tts_weights(system, p)
    return system.eval()
