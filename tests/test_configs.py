"""Every config composes and builds; typos are caught with the key named."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import open_dict

from speech_rl.train import build_module, build_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
CPU_TRAINERS = ["cpu", "ddp_cpu", "fsdp2_cpu"]


def _compose(overrides, tmp_path):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment, tmp_path):
    cfg = _compose([f"experiment={experiment}"], tmp_path)
    assert cfg.algorithm.name in ("grpo", "mwer", "diffro", "combined") and cfg.reward.terms
    module = build_module(cfg)                                  # no data or checkpoint needed to build
    expected = {"asr_grpo": "ASRGRPOModule", "asr_sft": "ASRSFTModule", "tts_sft": "TTSSFTModule",
                "tts_rl": "TTSRLModule"}[cfg.hydra.runtime.choices.module]
    assert type(module).__name__ == expected
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) > 0


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.endswith("_tiny")])
def test_cpu_experiment_builds_module_and_trainer(experiment, tmp_path, corpus):
    cfg = _compose([f"experiment={experiment}", f"paths.data_dir={corpus}"], tmp_path)
    module = build_module(cfg)
    assert module.group_size == cfg.algorithm.group_size
    trainer = build_trainer(cfg)
    assert trainer.max_steps == cfg.trainer.max_steps
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.train_set) == 24


@pytest.mark.parametrize("group,option", [("reward", p.stem) for p in (CONFIGS / "reward").glob("*.yaml")]
                         + [("algorithm", p.stem) for p in (CONFIGS / "algorithm").glob("*.yaml")])
def test_every_reward_and_algorithm_builds(group, option, tmp_path):
    tts = option.startswith("tts") or option in ("diffro", "combined")
    cfg = _compose(["experiment=tts_rl"] * tts + [f"{group}={option}"], tmp_path)
    build_module(cfg)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith("asr_") and "sft" not in e])
def test_asr_rl_experiment_switches_to_mwer(experiment, tmp_path):
    """`algorithm=mwer` on an ASR RL experiment is enough: no experiment leaves a GRPO-only key
    (beta, clip_eps) behind that the MWER parser would refuse."""
    module = build_module(_compose([f"experiment={experiment}", "algorithm=mwer"], tmp_path))
    assert module.algo.name == "mwer"


def test_asr_module_rejects_a_tts_algorithm(tmp_path):
    with pytest.raises(ValueError, match="unknown algorithm 'diffro'"):
        build_module(_compose(["algorithm=diffro"], tmp_path))


def test_module_target_that_is_not_a_module_is_named(tmp_path):
    cfg = _compose(["module._target_=speech_rl.nowhere.Module"], tmp_path)
    with pytest.raises(ValueError, match="'speech_rl.nowhere.Module' is not an importable class"):
        build_module(cfg)
    cfg = _compose(["module._target_=torch.nn.Linear"], tmp_path)
    with pytest.raises(ValueError, match="is not a LightningModule"):
        build_module(cfg)


@pytest.mark.parametrize("trainer", CPU_TRAINERS)
def test_cpu_trainers_compose(trainer, tmp_path):
    cfg = _compose([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer.accelerator == "cpu"


def test_typo_in_override_names_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        _compose(["trainer.max_stepz=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="grpoo"):
        _compose(["algorithm=grpoo"], tmp_path)


def test_unknown_names_are_listed(tmp_path):
    from rewards import RewardError

    cfg = _compose(["+reward.terms.nope={}"], tmp_path)
    with pytest.raises(RewardError, match="unknown reward 'nope'; registered rewards:"):
        build_module(cfg)
    cfg = _compose(["algorithm.name=ppo"], tmp_path)
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; available: grpo, mwer"):
        build_module(cfg)


def test_asr_corpus_splits_keep_their_synthesis_order():
    """eSpeak NG's samples depend on the calls made before in the process, so a split
    inserted before another changes that one's audio and every figure measured on it
    (README). New splits go last; the measured ones keep this order."""
    from omegaconf import OmegaConf

    splits = list(OmegaConf.load(CONFIGS / "data" / "asr_corpus.yaml").synth.splits)
    measured = ["train", "train_concat", "train_wide", "concat_wide", "train_long", "train_long_b", "val",
                "test_short", "test_long", "rl_pool", "rl_pool_long", "val_long", "rl_pool_heldout",
                "rl_pool_long_heldout"]
    assert splits[: len(measured)] == measured


def test_text_normalizer_is_one_key_for_rewards_and_validation(tmp_path):
    cfg = _compose(["experiment=asr_rl_open", "text_normalizer=whisper"], tmp_path)
    assert cfg.reward.normalizer == "whisper" and cfg.module.normalizer == "whisper"
    assert _compose(["experiment=asr_sft_open_xattn"], tmp_path).module.normalizer == "plain"
