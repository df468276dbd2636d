"""LightningModules: ``ASRGRPOModule`` (GRPO / MWER for audio-LLM ASR) and ``ASRSFTModule``
(the supervised base model)."""
from speech_rl.modules.asr_grpo import ASRGRPOModule
from speech_rl.modules.asr_sft import ASRSFTModule

__all__ = ["ASRGRPOModule", "ASRSFTModule"]
