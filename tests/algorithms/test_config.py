"""parse_algorithm: the YAML is the one home of every algorithm setting."""
import pytest

from speech_rl.algorithms.config import KEYS, load_algorithm, parse_algorithm


@pytest.mark.parametrize("name", sorted(KEYS))
def test_every_shipped_algorithm_config_parses_with_the_yaml_values(name):
    raw = load_algorithm(name)
    cfg = parse_algorithm(raw, (name,))
    for key, value in raw.items():
        assert getattr(cfg, key) == value, key
    with pytest.raises(Exception):
        cfg.beta = 1.0                          # frozen


def test_a_key_the_algorithm_does_not_read_is_an_error():
    with pytest.raises(ValueError, match=r"algorithm config for 'mwer': clip_eps not read by mwer"):
        parse_algorithm({**load_algorithm("mwer"), "clip_eps": 0.2}, ("grpo", "mwer"))


def test_a_missing_key_is_named():
    raw = load_algorithm("grpo")
    del raw["beta"]
    with pytest.raises(ValueError, match=r"algorithm config for 'grpo': missing beta"):
        parse_algorithm(raw, ("grpo",))


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown algorithm 'diffro'; available: grpo, mwer"):
        parse_algorithm(load_algorithm("diffro"), ("grpo", "mwer"))
    with pytest.raises(ValueError, match="length_norm must be 'sequence' or 'token', got 'words'"):
        parse_algorithm(load_algorithm("grpo", length_norm="words"), ("grpo",))
    with pytest.raises(ValueError, match="ppo_epochs must be >= 1"):
        parse_algorithm(load_algorithm("grpo", ppo_epochs=0), ("grpo",))


def test_micro_batches_hold_whole_groups():
    cfg = parse_algorithm(load_algorithm("grpo", group_size=4, micro_batch_size=10), ("grpo",))
    assert cfg.rows_per_micro_batch(16) == 8
    assert parse_algorithm(load_algorithm("grpo", group_size=4, micro_batch_size=2), ("grpo",)).rows_per_micro_batch(16) == 4
    assert parse_algorithm(load_algorithm("grpo", group_size=4), ("grpo",)).rows_per_micro_batch(16) == 16
