"""LoRA through peft: only adapters train, the reference is the base with adapters off (the
same weights, no copy), engines get the merged weights, and it learns like the full model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.models.audio_llm import build_audio_llm
from speech_rl.models.llm import response_logprobs
from tests.conftest import TINY_MODEL, length_learning_run, run_cli, scalars

peft = pytest.importorskip("peft", reason="pip install -e '.[lora]'")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None}


def _model(lora=LORA):
    torch.manual_seed(0)
    m = build_audio_llm(**TINY_MODEL, lora=lora)
    with torch.no_grad():                     # peft starts B at 0 (adapters off); give them something to say
        for name, p in m.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return m


def test_only_adapters_and_the_projector_train():
    m = _model()
    trainable = [n for n, p in m.llm.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    assert all(p.requires_grad for p in m.projector.parameters())
    with pytest.raises(ValueError, match=r"target_modules \['attn'\] name no linear layer"):
        build_audio_llm(**TINY_MODEL, lora=dict(LORA, target_modules=["attn"]))


def test_merged_weights_equal_merge_and_unload_and_the_engine_serves_them():
    from speech_rl.models.lora import merged_copy, merged_named_parameters

    m = _model()
    merged = dict(merged_named_parameters(m.llm))
    plain = merged_copy(m.llm)
    assert not hasattr(plain, "peft_config")
    ref = dict(plain.named_parameters())
    assert merged.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(merged[k], ref[k], rtol=0, atol=1e-6)
    # the engine built from the merged copy, then updated with the merged weights, decodes as the peft model
    frames, lens = m.encode(torch.randn(2, 60, 80), torch.tensor([60, 45]))
    prompt, mask = m(frames, lens)
    eng = TorchEngine(plain, eos_id=m.tokenizer.eos_id, pad_id=m.tokenizer.pad_id)
    with torch.no_grad():
        for name, p in m.llm.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)                   # a training step moved the adapters
    eng.update_weights(merged_named_parameters(m.llm))
    out = eng.generate(prompt, mask, 1, SamplingParams(max_new_tokens=12, temperature=0.0))
    logp, _ = response_logprobs(m.llm, prompt, mask, out.tokens, out.mask.float())
    # greedy tokens are the argmax of the peft model: re-scored, each has the top log-prob
    full = m.llm(inputs_embeds=torch.cat([prompt, m.llm.get_input_embeddings()(out.tokens)], 1),
                 attention_mask=torch.cat([mask, torch.ones_like(out.tokens)], 1)).logits
    top = full[:, prompt.shape[1] - 1:-1].argmax(-1)
    assert torch.equal((top * out.mask)[:, :4], (out.tokens * out.mask)[:, :4])
    torch.testing.assert_close(logp * out.mask, out.logprobs * out.mask, rtol=1e-4, atol=1e-4)


def test_reference_is_the_base_with_adapters_off_and_shares_its_weights():
    from speech_rl.models.lora import AdaptersOff

    torch.manual_seed(0)
    base = build_audio_llm(**TINY_MODEL)
    m = _model()
    m.llm.get_base_model().load_state_dict(base.llm.state_dict(), strict=False)   # same base weights
    off = AdaptersOff(m.llm)
    assert list(off.parameters()) == []           # no copy, no parameters of its own
    prompt = torch.randn(2, 7, 64)
    mask = torch.ones(2, 7, dtype=torch.long)
    ids = torch.randint(3, 20, (6, 5))
    rm = torch.ones(6, 5)
    ref_logp = response_logprobs(off, prompt, mask, ids, rm)[0]       # G = 3: the KV-cache path
    base_logp = response_logprobs(base.llm, prompt, mask, ids, rm)[0]
    pol_logp = response_logprobs(m.llm, prompt, mask, ids, rm)[0]
    torch.testing.assert_close(ref_logp, base_logp, rtol=1e-5, atol=1e-5)
    assert (pol_logp - base_logp).abs().max() > 1e-3                   # the adapters are on outside the view


def test_lora_run_learns_checkpoints_adapters_and_holds_less_memory(corpus, tmp_path):
    """The learning test of every engine (conftest.length_learning_run) with model.lora.r=8, and the module's
    parameter + optimiser-state bytes against the full model's."""
    tags = length_learning_run(corpus, tmp_path, "model.lora.r=8", "optim.lr=1e-2", "algorithm.beta=0.04")
    assert "train/kl" in tags and np.mean(tags["train/kl"][-5:]) > 0     # the reference differs from the policy

    ck = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    sd = ck["state_dict"]
    assert any(".lora_B." in k for k in sd) and not any(k.startswith("reference.llm") for k in sd)

    from speech_rl.modules.asr_grpo import ASRGRPOModule

    hp = ck["hyper_parameters"]

    def state_bytes(lora_r: int) -> int:
        model = dict(hp["model"], lora=dict(hp["model"]["lora"], r=lora_r))
        mod = ASRGRPOModule(model, hp["algorithm"], hp["reward"], hp["rollout"], hp["optim"])
        params = {p.data_ptr(): p.numel() * p.element_size() for p in mod.parameters()}
        trainable = sum(p.numel() * p.element_size() for p in mod.policy.parameters() if p.requires_grad)
        return sum(params.values()) + 2 * trainable          # AdamW keeps two moments per trained weight

    assert state_bytes(8) < 0.8 * state_bytes(0)


def test_lora_checkpoint_holds_adapters_only_resumes_exactly_and_evaluates(corpus, tmp_path):
    """With the base named by model.init_from, checkpoints leave the frozen LM out; resume
    and `speech-rl eval` rebuild it from there."""
    import json

    from speech_rl.config_files import load_config_group

    cfg = load_config_group("model", "asr_tiny")
    torch.manual_seed(1)
    base = build_audio_llm(**{k: v for k, v in cfg.items() if k not in ("init_from", "lora")})
    torch.save(base.state_dict(), tmp_path / "base.pt")
    args = ["experiment=asr_grpo_tiny", "model.lora.r=8", f"model.init_from={tmp_path / 'base.pt'}",
            "optim.lr=1e-2", "optim.total_steps=4", "trainer.val_check_interval=1000",
            "callbacks.checkpoint.every_n_train_steps=2", "trainer.enable_progress_bar=false"]
    ref, split = tmp_path / "ref", tmp_path / "split"
    run_cli("train", *args, "trainer.max_steps=4", f"hydra.run.dir={ref}", cwd=tmp_path, data_dir=corpus)
    run_cli("train", *args, "trainer.max_steps=2", f"hydra.run.dir={split}", cwd=tmp_path, data_dir=corpus)
    run_cli("train", *args, "trainer.max_steps=4", f"hydra.run.dir={split}", "resume=auto", cwd=tmp_path,
            data_dir=corpus)
    a, b = scalars(ref), scalars(split)
    for tag in ("train/loss", "train/kl", "train/reward/mean"):
        assert b[tag] == pytest.approx(a[tag], rel=1e-5, abs=1e-6), (tag, a[tag], b[tag])

    ck = torch.load(ref / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = ck["state_dict"].keys()
    assert ck["speech_rl"]["lora_base_dropped"] > 0
    assert any(".lora_A." in k for k in keys) and not any(".base_layer." in k for k in keys)
    assert not any(k.startswith("policy.llm") and "lora_" not in k for k in keys)
    assert any(k.startswith("policy.projector.") for k in keys)          # what trains besides the adapters
    res = json.loads(run_cli("eval", str(corpus / "embedded" / "val.jsonl"), str(ref / "checkpoints" / "last.ckpt"),
                             "--json", cwd=tmp_path, data_dir=corpus).stdout)
    assert res["utterances"] == 8 and 0 <= res["wer"]
    from speech_rl.models.audio_llm import load_policy          # the base from init_from, the adapters from the file

    policy = load_policy(ref / "checkpoints" / "last.ckpt")
    merged_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                   for k, v in policy.llm.state_dict().items() if "lora_" not in k}
    for k, v in base.llm.state_dict().items():
        torch.testing.assert_close(merged_base[k], v, rtol=0, atol=0)
    lora_a = next(k for k in keys if ".lora_A." in k)
    torch.testing.assert_close(policy.state_dict()[lora_a[len("policy."):]], ck["state_dict"][lora_a])
    # the shippable copy (speech-rl export) of an adapters-only checkpoint evaluates the same
    run_cli("export", str(ref / "checkpoints" / "last.ckpt"), str(tmp_path / "small.pt"), "--dtype", "float32",
            cwd=tmp_path, data_dir=corpus)
    res_export = json.loads(run_cli("eval", str(corpus / "embedded" / "val.jsonl"), str(tmp_path / "small.pt"),
                                    "--json", cwd=tmp_path, data_dir=corpus).stdout)
    assert res_export == res
    (tmp_path / "base.pt").unlink()
    gone = run_cli("eval", str(corpus / "embedded" / "val.jsonl"), str(ref / "checkpoints" / "last.ckpt"),
                   cwd=tmp_path, data_dir=corpus, check=False)
    assert gone.returncode != 0 and "LoRA adapters without their base" in gone.stderr


def test_gpt2_conv1d_layers_merge_like_the_adapted_model():
    """GPT-2 (the Whisper-decoder LM) keeps its weights transposed in Conv1D layers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from speech_rl.models.lora import apply_lora, merged_copy, merged_named_parameters

    torch.manual_seed(0)
    lm = apply_lora(GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=50, n_positions=64,
                                               bos_token_id=0, eos_token_id=1)), r=4).eval()
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        x = torch.randint(0, 50, (2, 10))
        plain = merged_copy(lm).eval()
        torch.testing.assert_close(plain(x).logits, lm(x).logits, rtol=1e-4, atol=1e-5)
        ref = dict(plain.named_parameters())
        for k, v in merged_named_parameters(lm):
            torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-6)

