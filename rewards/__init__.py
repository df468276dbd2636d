"""Reward plugins and their registry.

Public surface: ``register_reward``, ``get_reward``, ``available_rewards``,
``load_plugins``, ``RewardSet`` (combination by name and weight), ``RewardError``.
Built-in rewards: ``wer``, ``hallucination``, ``keyword`` (see ``rewards.asr``); ``duration``,
``diversity``, ``mos``, ``speaker_sim`` (see ``rewards.tts``).
"""
from rewards.registry import RewardError, available_rewards, get_reward, load_plugins, register_reward
from rewards import asr as _asr  # noqa: F401  (registers the built-in ASR rewards)
from rewards import tts as _tts  # noqa: F401  (registers the built-in TTS rewards)
from rewards.combine import RewardOutput, RewardSet, RewardTerm, RewardTimeout

__all__ = ["register_reward", "get_reward", "available_rewards", "load_plugins", "RewardSet", "RewardTerm",
           "RewardOutput", "RewardError", "RewardTimeout"]
