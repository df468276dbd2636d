"""write_hf_folder: the folder vLLM / SGLang load their copy from, written on every rank
(the 2-process DDP / FSDP2 runs with rollout=vllm in tests/distributed cover rank 1)."""
import json

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from speech_rl.engines.base import write_hf_folder


def test_folder_loads_back_with_tied_and_untied_heads(tmp_path):
    for tied in (True, False):
        torch.manual_seed(0)
        lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied))
        lm.config.architectures = ["Qwen2AudioForConditionalGeneration"]      # an LM split out of a family model
        folder = tmp_path / f"tied_{tied}"
        write_hf_folder(lm, folder)
        assert json.loads((folder / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
        back = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        assert (back.lm_head.weight is back.model.embed_tokens.weight) == tied
        for (n, a), (m, b) in zip(lm.state_dict().items(), back.state_dict().items()):
            assert n == m and torch.equal(a, b), n
