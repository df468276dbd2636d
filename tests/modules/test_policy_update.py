"""RLModule.policy_update, the one policy phase of every RL module: ppo_epochs > 1 clips
against the policy that sampled, and micro-batches give the full batch's loss and gradients."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from speech_rl.algorithms.config import load_algorithm
from speech_rl.config_files import load_config_group
from speech_rl.modules.optim import load_optim
from speech_rl.data.tokenizer import CharTokenizer
from speech_rl.models.llm import response_logprobs
from speech_rl.modules.text_grpo import TextGRPOModule

G, B, T = 4, 3, 6


def make(**algo):
    """A small text GRPO module (reward: WER against each row's ref)."""
    return TextGRPOModule(CharTokenizer(), llm={"hidden_size": 64, "num_layers": 2, "max_positions": 256},
                          algorithm=load_algorithm("grpo", **{"group_size": G, "clip_eps": 0.2, "beta": 0.0, **algo}),
                          reward={"terms": {"wer": {"weight": 1.0}}},
                          rollout=load_config_group("rollout", "torch", max_new_tokens=12),
                          optim=load_optim(lr=3e-3, grad_clip=None), seed=0)


def _rollout(module):
    torch.manual_seed(0)
    pids, pmask = module.prompt_ids([f"say {w}" for w in ("one", "two", "three")])
    ids = torch.randint(1, module.tokenizer.vocab_size, (B * G, T))
    mask = torch.ones(B * G, T)
    mask[::3, 4:] = 0                                        # some shorter responses
    adv = torch.randn(B * G)
    return pids, pmask, ids, mask, adv


def _update(module, rollout, step):
    """Run policy_update with ``step`` standing in for the guarded optimiser step."""
    pids, pmask, ids, mask, adv = rollout
    emb = module.policy.get_input_embeddings()

    def policy_logp(sl):
        p = module.prompts_of(sl)
        return response_logprobs(module.policy, emb(pids[p]), pmask[p], ids[sl], mask[sl])[0], None, None

    def terms(sl, logp, old, ref, aux, mean_tokens):
        return module.grpo_term(logp, old, ref, adv[sl], mask[sl], mean_tokens)

    module.guarded_step = step
    return module.policy_update(mask, policy_logp, terms)


def _sgd_step(module, lr):
    opt = torch.optim.SGD(module.policy.parameters(), lr=lr)

    def step(losses):
        opt.zero_grad()
        for loss in losses:
            loss.backward()
        opt.step()
        return {}
    return step


@pytest.mark.parametrize("length_norm", ["sequence", "token"])
def test_micro_batched_loss_and_gradients_equal_the_full_batch(length_norm):
    grads = {}
    for mb in (None, G):                                     # one backward, or one per group
        L.seed_everything(0, verbose=False)
        module = make(length_norm=length_norm, micro_batch_size=mb)
        rollout = _rollout(module)
        total = []

        def step(losses):
            module.policy.zero_grad()
            for loss in losses:
                total.append(float(loss.detach()))
                loss.backward()
            return {}
        _update(module, rollout, step)
        assert len(total) == (1 if mb is None else B)
        grads[mb] = (sum(total), [p.grad.clone() for p in module.policy.parameters() if p.grad is not None])
    (full, g_full), (parts, g_parts) = grads[None], grads[G]
    assert parts == pytest.approx(full, rel=1e-5, abs=1e-7)
    assert len(g_full) == len(g_parts) > 0
    for a, b in zip(g_full, g_parts):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_second_ppo_epoch_clips_against_the_sampling_policy():
    """Epoch 1 is on-policy (ratio 1, nothing clipped); after a large step, epoch 2's ratio
    moves away from 1 and the clip acts. With ``old_logp`` taken from the current epoch (the
    bug this replaces) the ratio would be 1 in every epoch."""
    L.seed_everything(0, verbose=False)
    one = make(ppo_epochs=1, clip_eps=0.05)
    rollout = _rollout(one)
    m1 = _update(one, rollout, _sgd_step(one, lr=0.5))
    assert m1["clip_frac"] == 0.0 and m1["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    L.seed_everything(0, verbose=False)
    two = make(ppo_epochs=2, clip_eps=0.05)
    m2 = _update(two, rollout, _sgd_step(two, lr=0.5))
    assert m2["clip_frac"] > 0.1, m2
    assert abs(m2["ratio_mean"] - 1.0) > 1e-3, m2


def test_ppo_epochs_under_a_trainer_make_that_many_optimiser_steps_per_rollout():
    L.seed_everything(0, verbose=False)
    module = make(ppo_epochs=3, micro_batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    rows = [{"prompt": f"say {w}", "ref": w} for w in ("one", "two", "three", "four")]
    trainer.fit(module, DataLoader(rows, batch_size=2, collate_fn=list))
    # trainer.max_steps and global_step count optimiser steps: 2 rollout batches x 3 epochs
    assert trainer.global_step == 6
    # the last epoch's ratio is against the sampling policy, two updates old
    assert abs(float(trainer.callback_metrics["train/ratio_mean"]) - 1.0) > 1e-4


def test_optim_settings_have_one_home():
    """AdamW settings come from configs/optim/adamw.yaml alone: a missing key is named, not
    filled by a default in code; load_optim refuses a key the file does not have."""
    from speech_rl.modules.optim import adamw_warmup_cosine

    o = load_optim(lr=1e-3)
    opt = adamw_warmup_cosine([torch.nn.Parameter(torch.zeros(2))], o)["optimizer"]
    assert opt.defaults["betas"] == tuple(o["betas"]) and opt.defaults["weight_decay"] == o["weight_decay"]
    with pytest.raises(ValueError, match="optim config lacks betas"):
        adamw_warmup_cosine([torch.nn.Parameter(torch.zeros(2))], {k: v for k, v in o.items() if k != "betas"})
    module = make()
    module.hparams.optim.pop("max_consecutive_skips")
    with pytest.raises(ValueError, match="lacks max_consecutive_skips"):
        module.configure_optimizers()
    with pytest.raises(ValueError, match="betaz not in configs/optim/adamw.yaml"):
        load_optim(betaz=[0.9, 0.9])
