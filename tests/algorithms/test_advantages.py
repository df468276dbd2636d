import math

import pytest
import torch

from speech_rl.algorithms import group_advantages


def test_hand_computed_group_of_four():
    # mean 2.5; population var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; std = 1.1180340
    # A = (R - 2.5) / 1.1180340 = [-1.3416408, -0.4472136, 0.4472136, 1.3416408]
    adv, m = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), group_size=4, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-1.3416408, -0.4472136, 0.4472136, 1.3416408]),
                               rtol=0, atol=1e-6)
    assert m["zero_std_frac"].item() == 0.0


def test_groups_are_independent_and_flat_group_is_zero_not_nan():
    # group 1 [1, 2]: mean 1.5, std 0.5 -> [-1, 1]; group 2 [3, 3]: std 0 -> [0, 0]
    adv, m = group_advantages(torch.tensor([1.0, 2.0, 3.0, 3.0]), group_size=2, eps=0.0)
    assert adv.tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert m["zero_std_frac"].item() == 0.5


def test_loop_matches_vectorised():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6 * 5, generator=g)
    adv, _ = group_advantages(r, group_size=5, eps=1e-6)
    for b in range(6):
        grp = r[b * 5:(b + 1) * 5].tolist()
        mu = sum(grp) / 5
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / 5)
        for i in range(5):
            assert adv[b * 5 + i].item() == pytest.approx((grp[i] - mu) / (sd + 1e-6), abs=1e-6)


def test_unscaled_is_mean_centred():
    adv, _ = group_advantages(torch.tensor([1.0, 3.0]), group_size=2, scale=False)
    assert adv.tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("bad,g,msg", [(torch.ones(5), 2, "groups of 2"),
                                        (torch.ones(2, 2), 2, "1-D"),
                                        (torch.tensor([1.0, float("nan")]), 2, "non-finite")])
def test_bad_input_is_named(bad, g, msg):
    with pytest.raises(ValueError, match=msg):
        group_advantages(bad, group_size=g)
