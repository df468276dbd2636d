"""LightningModules: ``ASRGRPOModule`` (GRPO / MWER for audio LLM ASR)."""
from speech_rl.modules.asr_grpo import ASRGRPOModule

__all__ = ["ASRGRPOModule"]
