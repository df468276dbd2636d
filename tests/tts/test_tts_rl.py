"""`speech-rl train experiment=tts_rl` on a tiny system built from config: every phase of
the TTS step runs, the filter keeps what it should, a waveform recogniser reads the audio."""
import math

import pytest

from tests.conftest import run_cli, scalars

TINY = ["model.lm.hidden_size=32", "model.flow.d_model=32", "model.flow.n_blocks=2", "model.flow.cond_layers=1",
        "model.token_asr.d_model=32", "model.token_asr.n_layers=1", "model.vocoder.n_iter=4", "model.flow_steps=2",
        "data.codebook_size=16", "data.synth.splits={train: 8, val: 4}", "data.batch_size=4",
        "trainer.enable_progress_bar=false", "callbacks.collapse=null"]


@pytest.fixture(scope="module")
def tts_data(tmp_path_factory):
    return tmp_path_factory.mktemp("tts_data")


def test_combined_with_audio_rewards_runs_every_phase(tts_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "experiment=tts_rl", "algorithm=combined", "algorithm.group_size=4", "reward=tts_r123",
            "rollout.needs_audio=true", "rollout.max_new_tokens=30", "rollout.val_max_new_tokens=30",
            "trainer.max_steps=3", "trainer.val_check_interval=3", f"hydra.run.dir={run}", *TINY,
            cwd=tmp_path, data_dir=tts_data)
    s = scalars(run / "tensorboard")
    for k in ("time/rollout", "time/flow", "time/reward", "time/policy", "time/sync", "train/reward/wer",
              "train/reward/duration", "train/reward/diversity", "train/diffro_logp_per_char", "train/kl",
              "val/wer", "val/len_ratio"):
        assert k in s and all(math.isfinite(v) for v in s[k]), k
    # the filter keeps only stopped rows with a positive advantage
    assert all(k <= f + 1e-6 for k, f in zip(s["train/filter_keep_frac"], s["train/finished_frac"]))
    assert all(k <= 0.75 + 1e-6 for k in s["train/filter_keep_frac"])      # A > 0 for at most 3 of 4 in a group
    # the flow decoder's noise generator is in the checkpoint, so a resumed run draws the same audio
    import torch

    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ck["global_step"] == 3 and ck["speech_rl"]["ranks"][0]["module"]["flow_gen"].dtype == torch.uint8


@pytest.mark.parametrize("algorithm", ["grpo", "diffro"])
def test_grpo_and_diffro_steps_run(algorithm, tts_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "experiment=tts_rl", f"algorithm={algorithm}", "algorithm.group_size=2", "reward=tts_r12",
            "rollout.max_new_tokens=20", "rollout.val_max_new_tokens=20", "trainer.max_steps=2",
            "trainer.val_check_interval=2", f"hydra.run.dir={run}", *TINY, cwd=tmp_path, data_dir=tts_data)
    s = scalars(run / "tensorboard")
    assert len(s["train/loss"]) == 2 and all(math.isfinite(v) for v in s["train/loss"])
    assert ("train/diffro_logp_per_char" in s) == (algorithm == "diffro") and "time/flow" not in s


def test_waveform_recognizer_runs_flow_and_reads_the_audio(tts_data, tmp_path):
    """rollout.recognizer=<ASR checkpoint>: the samples are synthesised (flow + vocoder in
    the loop) and transcribed by that ASR, which is frozen and handed off like a reward model."""
    import torch

    from speech_rl.models.audio_llm import build_audio_llm
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    asr = build_audio_llm(**TINY_MODEL)
    torch.save({"hyper_parameters": {"model": TINY_MODEL},
                "state_dict": {f"policy.{k}": v for k, v in asr.state_dict().items()}}, tmp_path / "asr.ckpt")
    run = tmp_path / "run"
    run_cli("train", "experiment=tts_rl", "algorithm=grpo", "algorithm.group_size=2", "reward=tts_r1",
            f"rollout.recognizer={tmp_path / 'asr.ckpt'}", "rollout.max_new_tokens=20",
            "rollout.val_max_new_tokens=20", "trainer.max_steps=2", "trainer.val_check_interval=2",
            f"hydra.run.dir={run}", *TINY, cwd=tmp_path, data_dir=tts_data)
    s = scalars(run / "tensorboard")
    assert "time/flow" in s and len(s["train/reward/wer"]) == 2
    assert all(-1.0 <= v <= 1.0 for v in s["train/reward/wer"])            # clip_min -1: an untrained ASR
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    for k, v in asr.state_dict().items():                                 # frozen: saved as loaded
        torch.testing.assert_close(ck["state_dict"][f"waveform_asr.{k}"], v, rtol=0, atol=0)


def test_lora_on_the_tts_lm_trains_adapters_only_and_reloads(tts_data, tmp_path):
    """model.lora.r=4 for TTS GRPO from a supervised base (model.init_from): only the adapters
    change, the checkpoint holds no frozen LM weights, and load_tts_system rebuilds the base from
    init_from and puts the trained adapters back."""
    import torch

    from speech_rl.tts.system import load_tts_system

    sft, rl = tmp_path / "sft", tmp_path / "rl"
    run_cli("train", "experiment=tts_sft_base", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "optim.warmup_steps=0", f"hydra.run.dir={sft}", *TINY, cwd=tmp_path, data_dir=tts_data)
    base = sft / "checkpoints" / "last.ckpt"
    run_cli("train", "experiment=tts_rl", "algorithm=grpo", "algorithm.group_size=4", "reward=tts_r12",
            "rollout.max_new_tokens=20", "rollout.val_max_new_tokens=20", "trainer.max_steps=3", "optim.lr=1e-2",
            "trainer.val_check_interval=3", f"model.init_from={base}", "model.lora.r=4", f"hydra.run.dir={rl}",
            *TINY, cwd=tmp_path, data_dir=tts_data)
    s = scalars(rl / "tensorboard")
    assert len(s["train/loss"]) == 3 and all(math.isfinite(v) for v in s["train/loss"]) and max(s["train/kl"]) > 0
    ck = torch.load(rl / "checkpoints" / "last.ckpt", weights_only=False)
    sd = ck["state_dict"]
    assert ck["speech_rl"]["lora_base_dropped"] > 0
    assert not any(k.startswith("tts.lm.llm.") and ".lora_" not in k for k in sd)
    lora_b = {k: v for k, v in sd.items() if k.startswith("tts.lm.llm.") and ".lora_B." in k}
    assert lora_b and any(v.abs().max() > 0 for v in lora_b.values())          # peft starts B at 0: trained
    system = load_tts_system(rl / "checkpoints" / "last.ckpt")
    own = dict(system.named_parameters())
    for k, v in lora_b.items():
        torch.testing.assert_close(own[k[len("tts."):]], v)
    sft_sd = torch.load(base, weights_only=False)["state_dict"]
    merged_free = {n: p for n, p in system.lm.llm.get_base_model().named_parameters() if ".lora_" not in n}
    q = next(n for n in merged_free if n.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    torch.testing.assert_close(merged_free[q], sft_sd["tts.lm.llm." + q.replace(".base_layer", "")])
