"""TextGRPOModule: the GRPO step on text prompts learns from a reward, under a real Trainer."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from rewards import register_reward
from speech_rl.callbacks import PhaseTimer
from speech_rl.algorithms.config import load_algorithm
from speech_rl.config_files import load_config_group
from speech_rl.modules.optim import load_optim
from speech_rl.data.tokenizer import CharTokenizer
from speech_rl.modules.text_grpo import TextGRPOModule


@register_reward("test_text_short")
def short(hyp, **_):
    """Shorter completions are better."""
    return [-len(h) / 10 for h in hyp]


def make(llm=None, **algo):
    return TextGRPOModule(CharTokenizer(), llm={"hidden_size": 64, "num_layers": 2, "max_positions": 256, **(llm or {})},
                          algorithm=load_algorithm("grpo", **{"group_size": 4, "clip_eps": 0.2, "beta": 0.0, **algo}),
                          reward={"terms": {"test_text_short": {"weight": 1.0}}},
                          rollout=load_config_group("rollout", "torch", max_new_tokens=24),
                          optim=load_optim(lr=3e-3, grad_clip=None), seed=0)


def test_a_length_reward_shortens_completions():
    L.seed_everything(0, verbose=False)
    module = make(micro_batch_size=8)
    rows = [{"prompt": f"say {w}"} for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]
    lens = []

    class Record(PhaseTimer):
        def on_train_batch_end(self, trainer, pl_module, *a):
            super().on_train_batch_end(trainer, pl_module, *a)
            lens.append(float(trainer.callback_metrics["train/response_len"]))

    timer = Record()
    trainer = L.Trainer(accelerator="cpu", max_steps=25, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, DataLoader(rows, batch_size=4, shuffle=True, collate_fn=list))
    assert sum(lens[-5:]) / 5 < 0.5 * sum(lens[:3]) / 3, lens
    assert {"rollout", "reward", "policy", "sync", "step"} <= set(timer.last)


def test_reference_model_only_with_kl_and_empty_prompt_is_named():
    assert make().reference is None
    with_kl = make(beta=0.1)
    assert with_kl.reference is not None and not any(p.requires_grad for p in with_kl.reference.parameters())
    with pytest.raises(ValueError, match="prompt '' encodes to no tokens"):
        with_kl.prompt_ids(["fine", ""])


def test_a_policy_with_dropout_is_refused_before_any_rollout():
    """The engine samples without dropout; re-scoring with it would make eq. 4's ratio != 1."""
    with pytest.raises(ValueError, match=r"RL policy LM has dropout in training mode \(attention_dropout=0.1\)"):
        make(llm={"attention_dropout": 0.1}).create_engine()
    make().create_engine()                               # no dropout: the engine builds
