import pytest
import torch

from speech_rl.algorithms.diffro import diffro_loss, sample_filter, straight_through_tokens


def test_straight_through_forward_is_the_sampled_token_and_gradient_the_softmax():
    logits = torch.tensor([[[1.0, 2.0, 0.5, 9.0], [0.0, 0.0, 0.0, 9.0]]], requires_grad=True)   # K=3 + eos
    tokens = torch.tensor([[2, 3]])                                   # second position: eos -> zero row
    y = straight_through_tokens(logits, tokens, n_codes=3)
    assert torch.equal(y.detach(), torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]))
    w = torch.tensor([1.0, -1.0, 2.0])
    (y[0, 0] * w).sum().backward()
    p = torch.softmax(torch.tensor([1.0, 2.0, 0.5]), -1)
    # d(w . p)/dlogit_j = p_j (w_j - w . p); the eos logit and the zero row get nothing
    assert torch.allclose(logits.grad[0, 0, :3], p * (w - (w * p).sum()), atol=1e-6)
    assert logits.grad[0, 0, 3] == 0 and logits.grad[0, 1].abs().sum() == 0


def test_gumbel_mode_gives_one_hot_rows_and_bad_mode_raises():
    torch.manual_seed(0)
    y = straight_through_tokens(torch.randn(2, 5, 7), torch.zeros(2, 5, dtype=torch.long), n_codes=6,
                                hard_sample="gumbel")
    assert y.shape == (2, 5, 6) and torch.equal(y.sum(-1), torch.ones(2, 5))
    with pytest.raises(ValueError, match="hard_sample"):
        straight_through_tokens(torch.randn(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), 2, hard_sample="soft")


def test_diffro_loss_per_char_mean_over_kept_finite_rows():
    lp = torch.tensor([-4.0, -10.0, float("-inf"), -2.0], requires_grad=True)
    chars = torch.tensor([2, 5, 3, 1])
    keep = torch.tensor([True, True, True, False])
    loss, m = diffro_loss(lp, chars, keep)
    # kept and finite: rows 0, 1 -> per char -2, -2 -> loss = -(-2 - 2) / 2 = 2
    assert loss.item() == pytest.approx(2.0) and m["diffro_kept_frac"].item() == pytest.approx(0.5)
    loss.backward()
    assert torch.allclose(lp.grad, torch.tensor([-0.25, -0.1, 0.0, 0.0]))
    none, _ = diffro_loss(lp.detach().requires_grad_(), chars, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_sample_filter():
    fin = torch.tensor([True, True, False, True])
    assert sample_filter(fin).tolist() == [True, True, False, True]
    assert sample_filter(fin, torch.tensor([1.0, 0.0, 2.0, -1.0])).tolist() == [True, False, False, False]
