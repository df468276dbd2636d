"""The requests the SGLang engine sends: built here on CPU; normalised by SGLang's own
GenerateReqInput wherever sglang imports (GPU machines: the device script)."""
import importlib.util

import pytest
import torch

from speech_rl.engines import SamplingParams
from speech_rl.engines.sglang_engine import request_embeds, sglang_sampling_params


def _prompts():
    emb = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    return emb, mask


def test_request_embeds_are_unpadded_and_prompt_major():
    emb, mask = _prompts()
    out = request_embeds(emb, mask, group_size=3)
    assert len(out) == 6 and all(isinstance(v, float) for v in out[0][0])
    assert [len(e) for e in out] == [2, 2, 2, 4, 4, 4]                # G copies of each prompt, in order
    assert out[0] == emb[0, 2:].tolist() and out[3] == emb[1].tolist()
    sp = sglang_sampling_params(SamplingParams(max_new_tokens=5, temperature=0.7, top_k=0), eos_id=2)
    assert sp["top_k"] == -1 and sp["stop_token_ids"] == [2] and sp["max_new_tokens"] == 5


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="sglang not installed (gpu extra)")
def test_sglang_normalises_our_request_as_a_batch_of_embedding_prompts():
    from sglang.srt.managers.io_struct import GenerateReqInput

    emb, mask = _prompts()
    obj = GenerateReqInput(input_embeds=request_embeds(emb, mask, 2),
                           sampling_params=sglang_sampling_params(SamplingParams(max_new_tokens=4), 2),
                           return_logprob=True)
    obj.normalize_batch_and_arguments()
    assert not obj.is_single and obj.batch_size == 4
    assert obj[3].input_embeds == emb[1].tolist() and obj[0].return_logprob
