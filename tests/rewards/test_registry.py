import textwrap

import pytest

from rewards import RewardError, available_rewards, get_reward, load_plugins, register_reward


def test_builtins_registered():
    assert {"wer", "hallucination", "keyword"} <= set(available_rewards())


def test_duplicate_name_raises_and_names_the_owner():
    with pytest.raises(RewardError, match="already registered"):
        @register_reward("wer")
        def other(hyp, **_):
            return [0.0] * len(hyp)


def test_unknown_name_lists_registered():
    with pytest.raises(RewardError, match=r"unknown reward 'nope'; registered rewards: .*hallucination.*wer"):
        get_reward("nope")


def test_bad_params_are_named():
    with pytest.raises(RewardError, match="reward 'wer' does not accept params"):
        get_reward("wer", bogus=1)
    with pytest.raises(RewardError, match="reward 'hallucination' does not accept"):
        get_reward("hallucination", bogus_rule=3)


def test_plugin_by_file_path_and_dotted_path(tmp_path, monkeypatch):
    f = tmp_path / "my_plugin_rewards.py"
    f.write_text(textwrap.dedent('''
        from rewards import register_reward

        @register_reward("test_plugin_len")
        def neg_len(hyp, scale=1.0, **_):
            return [-scale * len(h) for h in hyp]
    '''))
    assert load_plugins([str(f)]) == ["test_plugin_len"]
    assert get_reward("test_plugin_len", scale=2.0)(hyp=["ab", ""]) == [-4.0, -0.0]
    assert load_plugins([str(f)]) == []            # loading twice is a no-op, not a duplicate
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rw.py").write_text("from rewards import register_reward\n"
                               "register_reward('test_plugin_dotted')(lambda hyp, **_: [1.0] * len(hyp))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_plugins(["pkgx.rw"]) == ["test_plugin_dotted"]


def test_missing_plugin_is_named(tmp_path):
    with pytest.raises(RewardError, match="does_not_exist.py"):
        load_plugins([str(tmp_path / "does_not_exist.py")])
    with pytest.raises(RewardError, match="no_such_module_xyz"):
        load_plugins(["no_such_module_xyz"])
