"""Shared fixtures of the engine tests: a tiny audio LLM and three left-padded prompts."""
import pytest
import torch

from speech_rl.models import build_audio_llm
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_audio_llm(**TINY_MODEL).eval()


@pytest.fixture(scope="module")
def prompts(model):
    torch.manual_seed(1)
    with torch.no_grad():
        frames, lens = model.encode(torch.randn(3, 120, 80), torch.tensor([120, 80, 50]))
        return model(frames, lens)
