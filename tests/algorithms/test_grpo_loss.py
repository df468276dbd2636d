import math

import pytest
import torch

from speech_rl.algorithms import grpo_loss, k3_kl

L = math.log


def test_positive_advantage_clips_high_ratio():
    # ratio = [0.5/0.4, 0.25/0.25] = [1.25, 1.0]; clip(1.25) = 1.2 with eps 0.2
    # A = +1: min(1.25, 1.2) = 1.2, min(1, 1) = 1 -> J = (1.2 + 1) / 2 = 1.1 -> loss -1.1
    logp = torch.tensor([[L(0.5), L(0.25)]])
    old = torch.tensor([[L(0.4), L(0.25)]])
    loss, m = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2), clip_eps=0.2, beta=0.0)
    assert loss.item() == pytest.approx(-1.1, abs=1e-6)
    assert m["clip_frac"].item() == pytest.approx(0.5)      # one of two tokens clipped
    assert m["ratio_max"].item() == pytest.approx(1.25, abs=1e-6)


def test_negative_advantage_keeps_unclipped_pessimistic_term():
    # A = -1: unclipped [-1.25, -1], clipped [-1.2, -1] -> min = [-1.25, -1] -> J = -1.125
    logp = torch.tensor([[L(0.5), L(0.25)]])
    old = torch.tensor([[L(0.4), L(0.25)]])
    loss, m = grpo_loss(logp, old, None, torch.tensor([-1.0]), torch.ones(1, 2), clip_eps=0.2, beta=0.0)
    assert loss.item() == pytest.approx(1.125, abs=1e-6)
    assert m["clip_frac"].item() == 0.0


def test_k3_kl_hand_value():
    # d = log .25 - log .5 = -0.6931472; exp(d) - d - 1 = 0.5 + 0.6931472 - 1 = 0.1931472
    assert k3_kl(torch.tensor(L(0.5)), torch.tensor(L(0.25))).item() == pytest.approx(0.1931472, abs=1e-6)
    assert k3_kl(torch.tensor(-1.3), torch.tensor(-1.3)).item() == 0.0


def test_kl_term_and_length_normalisation_with_padding():
    # seq 0: 2 tokens, on-policy (ratio 1), A = 0, KL per token 0.1931472 -> per-seq 0.1931472
    # seq 1: 1 real token (second is padding with garbage), A = 2, ratio 1, KL 0 -> per-seq -2
    # loss = mean(beta * 0.1931472, -2) with beta 0.5 -> (0.0965736 - 2) / 2 = -0.9517132
    logp = torch.tensor([[L(0.5), L(0.5)], [L(0.3), 123.0]])
    ref = torch.tensor([[L(0.25), L(0.25)], [L(0.3), -50.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = grpo_loss(logp, logp.clone(), ref, torch.tensor([0.0, 2.0]), mask, beta=0.5, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.9517132, abs=1e-6)
    # token-mean KL over 3 real tokens: (0.1931472 * 2 + 0) / 3 = 0.1287648
    assert m["kl"].item() == pytest.approx(0.1287648, abs=1e-6)


def test_on_policy_gradient_is_minus_advantage_over_length():
    # at ratio 1 and beta 0, d loss / d logp_it = -A_i / |o_i| / N
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.5, -1.0]), mask, beta=0.0, clip_eps=0.2)
    loss.backward()
    expected = torch.tensor([[-1.5 / 3 / 2] * 3, [1.0 / 2 / 2, 1.0 / 2 / 2, 0.0]])
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-7)


def _loop_grpo(logp, old, ref, adv, mask, eps, beta):
    total = 0.0
    for i in range(logp.shape[0]):
        n = int(mask[i].sum().item())
        s = 0.0
        for t in range(logp.shape[1]):
            if mask[i, t] == 0:
                continue
            r = math.exp(logp[i, t].item() - old[i, t].item())
            a = adv[i].item()
            sur = min(r * a, max(min(r, 1 + eps), 1 - eps) * a)
            d = ref[i, t].item() - logp[i, t].item()
            s += sur - beta * (math.exp(d) - d - 1)
        total += s / max(n, 1)
    return -total / logp.shape[0]


def test_loop_matches_vectorised():
    g = torch.Generator().manual_seed(1)
    n, t = 8, 7
    logp = -torch.rand(n, t, generator=g) * 3
    old = logp + 0.3 * torch.randn(n, t, generator=g)
    ref = logp + 0.5 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    loss, _ = grpo_loss(logp.double(), old.double(), ref.double(), adv.double(), mask.double(),
                        clip_eps=0.2, beta=0.1)
    assert loss.item() == pytest.approx(_loop_grpo(logp, old, ref, adv, mask, 0.2, 0.1), abs=1e-9)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="old_logp has shape"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 2), None, torch.zeros(2), torch.ones(2, 3), beta=0, clip_eps=0.2)
    with pytest.raises(ValueError, match="advantages has shape"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, torch.zeros(3), torch.ones(2, 3), beta=0, clip_eps=0.2)
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, torch.zeros(2), torch.ones(2, 3), beta=0.1, clip_eps=0.2)


def test_token_length_norm_weighs_every_token_the_same():
    # at ratio 1 and beta 0, d loss / d logp_it = -A_i / sum_j |o_j| (5 tokens here)
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.5, -1.0]), mask, beta=0.0, length_norm="token",
                        clip_eps=0.2)
    loss.backward()
    expected = torch.tensor([[-1.5 / 5] * 3, [1.0 / 5, 1.0 / 5, 0.0]])
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-7)


def test_token_length_norm_micro_batches_add_up_to_the_batch():
    # the modules weight each micro-batch loss by its share of rows; with the batch's mean
    # length passed in, the micro-batches give the whole batch's token-level loss
    g = torch.Generator().manual_seed(2)
    n, t = 8, 6
    logp = -torch.rand(n, t, generator=g, dtype=torch.float64)
    old = logp + 0.2 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    mask = (torch.arange(t)[None] < torch.randint(1, t + 1, (n, 1), generator=g)).double()
    whole, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, length_norm="token",
                        clip_eps=0.2)
    mean_tokens = float(mask.sum()) / n
    parts = sum(grpo_loss(logp[s], old[s], ref[s], adv[s], mask[s], beta=0.1, length_norm="token",
                          mean_tokens=mean_tokens, clip_eps=0.2)[0] * (2 / n) for s in (slice(i, i + 2) for i in range(0, n, 2)))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-12)
    # and it is not the sequence-level loss when lengths differ
    seq, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, clip_eps=0.2)
    assert abs(seq.item() - whole.item()) > 1e-4
    with pytest.raises(ValueError, match="length_norm"):
        grpo_loss(logp, old, ref, adv, mask, beta=0.1, length_norm="words", clip_eps=0.2)
