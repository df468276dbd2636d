import math

import pytest
import torch

from speech_rl.algorithms import mwer_loss


def test_hand_computed():
    # seq_logp [0, log 1/3] -> posteriors [1, 1/3] / (4/3) = [0.75, 0.25]
    # errors [0, 2], mean 1 -> L = 0.75 * (0 - 1) + 0.25 * (2 - 1) = -0.5
    loss, m = mwer_loss(torch.tensor([0.0, math.log(1 / 3)]), torch.tensor([0.0, 2.0]), group_size=2)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert m["expected_errors"].item() == pytest.approx(0.5, abs=1e-6)   # 0.75*0 + 0.25*2
    assert m["posterior_max"].item() == pytest.approx(0.75, abs=1e-6)


def test_gradient_moves_mass_to_fewer_errors():
    logp = torch.zeros(3, requires_grad=True)
    loss, _ = mwer_loss(logp, torch.tensor([0.0, 1.0, 5.0]), group_size=3)
    loss.backward()
    # d/dlogp_i of sum_j P_j E_j = P_i (E_i - E_bar) with P = 1/3, E_bar = 2
    torch.testing.assert_close(logp.grad, torch.tensor([-2 / 3, -1 / 3, 1.0]), rtol=0, atol=1e-6)


def test_loop_matches_vectorised_and_ref_len_normalisation():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(12, generator=g).double()
    err = torch.randint(0, 6, (12,), generator=g).double()
    ref_len = torch.tensor([4.0, 5.0, 7.0]).double()
    loss, _ = mwer_loss(lp, err, group_size=4, normalise_by_ref_len=ref_len)
    total = 0.0
    for b in range(3):
        ls, es = lp[b * 4:(b + 1) * 4].tolist(), [e / ref_len[b].item() for e in err[b * 4:(b + 1) * 4].tolist()]
        z = sum(math.exp(x) for x in ls)
        mean_e = sum(es) / 4
        total += sum(math.exp(x) / z * (e - mean_e) for x, e in zip(ls, es))
    assert loss.item() == pytest.approx(total / 3, abs=1e-12)


def test_bad_shapes():
    with pytest.raises(ValueError, match="groups of 4"):
        mwer_loss(torch.zeros(6), torch.zeros(6), group_size=4)
