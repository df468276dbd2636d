"""A TTS LM in CosyVoice2's Hugging Face layout (model.lm.speech_tokens with pretrained_path):
its logits over the speech tokens + EOS equal the checkpoint's own LM (head bias included) on
``[<|sos|> | text | <|task_id|> | speech tokens]``; ``hf_lm`` writes trained rows back; a
supervised TTS run and a TTS GRPO run train on it."""
import math

import pytest
import torch

from speech_rl.data.tokenizer import HFTokenizer
from speech_rl.tts.lm import TTSLM, head_bias
from tests.conftest import run_cli, scalars
from tests.models.tiny_hf_audio import save_cosyvoice2_lm

K = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_cosyvoice2_lm(tmp_path_factory.mktemp("cosyvoice2_lm"))


def _reference_logits(folder, tok, text, resp):
    """The checkpoint's LM on input ids, with the head bias it carries, at the speech / EOS rows."""
    from transformers import Qwen2ForCausalLM

    full = Qwen2ForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    rows = [tok.tok.convert_tokens_to_ids(f"<|s_{k}|>") for k in range(K)] + [tok.tok.convert_tokens_to_ids("<|eos1|>")]
    ids = [tok.tok.convert_tokens_to_ids("<|sos|>")] + tok.encode(text) + [tok.tok.convert_tokens_to_ids("<|task_id|>")]
    ids += [rows[r] for r in resp[:-1]]
    with torch.no_grad():
        h = full.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -len(resp):]      # (T, H)
    w, b = full.lm_head.weight[rows], head_bias(folder)[rows]
    return h @ w.T + b


def test_logits_equal_the_checkpoints_lm_and_hf_lm_writes_rows_back(folder, tmp_path):
    assert head_bias(folder) is not None
    tok = HFTokenizer(str(folder), prefix="", suffix="")
    lm = TTSLM(tok, K, ["a"], {"pretrained_path": str(folder), "speech_tokens": {}}).eval()
    assert lm.llm.get_input_embeddings().num_embeddings == K + 1 and lm.llm.lm_head.bias is not None
    text, resp = "meet grace at the store", [3, 7, 1, 15, K]                       # K: EOS
    with torch.no_grad():
        ours = lm.response_logits([text], ["a"], torch.tensor([resp]))[0]
    torch.testing.assert_close(ours, _reference_logits(folder, tok, text, resp), atol=1e-5, rtol=1e-5)
    # trained weights (layers, speech rows, sos / task rows) go back into the full-vocabulary LM
    torch.manual_seed(1)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ours = lm.response_logits([text], ["a"], torch.tensor([resp]))[0]
    out = tmp_path / "hf"
    lm.hf_lm().save_pretrained(out)
    tok.tok.save_pretrained(out)
    torch.testing.assert_close(ours, _reference_logits(out, tok, text, resp), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no token"):
        TTSLM(tok, K, ["a"], {"pretrained_path": str(folder), "speech_tokens": {"eos": "<|nope|>"}})
    with pytest.raises(ValueError, match="no token"):
        TTSLM(tok, 64, ["a"], {"pretrained_path": str(folder), "speech_tokens": {}})      # only 32 speech tokens


def _layout_overrides(folder):
    return ["model.tokenizer._target_=speech_rl.data.tokenizer.HFTokenizer", f"+model.tokenizer.path={folder}",
            "+model.tokenizer.suffix=''", f"model.lm.pretrained_path={folder}", "+model.lm.speech_tokens={}",
            "model.flow.d_model=32", "model.flow.n_blocks=2", "model.flow.cond_layers=1", "model.token_asr.d_model=32",
            "model.token_asr.n_layers=1", "model.vocoder.n_iter=4", f"data.codebook_size={K}", "data.batch_size=4",
            "trainer.enable_progress_bar=false"]


SHORT_PLUGIN = '''
from rewards import register_reward

@register_reward("few_tokens")
def few_tokens(tokens, **_):
    """Shorter speech is better: minus the tokens / 10."""
    return [-len(t) / 10.0 for t in tokens]
'''


def test_sft_then_grpo_on_the_cosyvoice2_layout(folder, tmp_path):
    data, sft, rl = tmp_path / "data", tmp_path / "sft", tmp_path / "rl"
    run_cli("train", "experiment=tts_sft_base", "trainer.max_steps=8", "trainer.val_check_interval=4",
            "data.synth.splits={train: 16, val: 4}", "optim.warmup_steps=0", f"hydra.run.dir={sft}",
            *_layout_overrides(folder), cwd=tmp_path, data_dir=data)
    from speech_rl.tts.system import load_tts_system

    system = load_tts_system(sft / "checkpoints" / "last.ckpt")
    assert system.lm.layout is not None and system.lm.llm.lm_head.out_features == K + 1
    lm = scalars(sft / "tensorboard")["train/lm"]
    assert len(lm) == 8 and sum(lm[-2:]) / 2 < lm[0] and all(math.isfinite(v) for v in lm)
    # GRPO learns on it: one plugin reward (fewer speech tokens is better), the sampled length falls
    plugin = tmp_path / "outside" / "short.py"
    plugin.parent.mkdir()
    plugin.write_text(SHORT_PLUGIN)
    run_cli("train", "experiment=tts_rl", "algorithm=grpo", "algorithm.group_size=4", "algorithm.beta=0.0",
            f"reward.plugins=[{plugin}]", "~reward.terms", "+reward.terms={few_tokens:{weight:1.0}}",
            "rollout.max_new_tokens=40", "rollout.val_max_new_tokens=20", "trainer.max_steps=16", "optim.lr=1e-2",
            "trainer.val_check_interval=16", "callbacks.collapse=null", f"model.init_from={sft}/checkpoints/last.ckpt",
            "data.synth.splits={train: 16, val: 4}", f"hydra.run.dir={rl}", *_layout_overrides(folder),
            cwd=tmp_path, data_dir=data)
    s = scalars(rl / "tensorboard")
    assert len(s["train/loss"]) == 16 and all(math.isfinite(v) for v in s["train/loss"])
    length = s["train/response_len"]
    assert sum(length[-4:]) / 4 < 0.5 * sum(length[:3]) / 3, length
    # the RL checkpoint's LM back in the HF layout: the same logits as the trained TTS LM
    out = tmp_path / "exported"
    run_cli("export", str(rl / "checkpoints" / "last.ckpt"), str(out), "--hf", cwd=tmp_path, data_dir=data)
    trained = load_tts_system(rl / "checkpoints" / "last.ckpt").lm
    text, resp = "meet grace at the store", [3, 7, 1, K]
    with torch.no_grad():
        ours = trained.response_logits([text], [trained.speakers[0]], torch.tensor([resp]))[0]
    torch.testing.assert_close(ours, _reference_logits(out, trained.tokenizer, text, resp), atol=1e-5, rtol=1e-5)
