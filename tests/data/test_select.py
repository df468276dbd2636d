import json
from pathlib import Path

import pytest

from speech_rl.data.manifest import Utterance
from speech_rl.data.select import SelectionRules, disagreement, loops, read_hypotheses, select_subsets
from tests.conftest import run_cli


def U(i, dur=3.0, kws=("a",)):
    return Utterance(f"u{i}", Path(f"/x/{i}.wav"), "call acme in paris", dur, tuple(kws), None)


def test_disagreement_and_loops():
    # "a b c d" vs "a b x d": 1 substitution over 4 words
    assert disagreement(["a b c d", "a b x d"]) == 0.25
    assert disagreement(["a b", "a b", "a"]) == 0.5            # worst pair: one deletion of 2
    assert disagreement(["only one"]) == 0.0
    assert loops("the cat the cat the cat", 3) and not loops("the cat sat", 3)


def test_selection_rules():
    pool = [U(0), U(1, dur=25.0), U(2, kws=("a", "b", "c")), U(3), U(4, dur=21.0, kws=("a", "b"))]
    sys_a = {"u0": "call acme in paris", "u1": "call acme in paris", "u2": "call acme in paris",
             "u3": "call call call call", "u4": "call acme in paris"}
    sys_b = {"u0": "call acme in paris", "u1": "fall acne on parts", "u2": "call acme in paris",
             "u3": "call acme in paris", "u4": "call acme in paris"}
    subsets, rep = select_subsets(pool, [sys_a, sys_b], {"D0": 2, "D1": 5, "D2": 5, "D3": 1},
                                  SelectionRules(disagree_wer=0.2, loop_repeats=3, long_seconds=20, min_keywords=2))
    assert [u.id for u in subsets["D1"]] == ["u3", "u1"]        # the loop ranks first, then disagreement 0.75
    assert sorted(u.id for u in subsets["D2"]) == ["u1", "u4"]
    assert [u.id for u in subsets["D3"]] == ["u2"]              # densest first (3 of 4 words)
    assert len(subsets["D0"]) == 2
    assert rep["qualified"] == {"D0": 5, "D1": 2, "D2": 2, "D3": 2} and rep["selected"]["D2"] == 2
    again, _ = select_subsets(pool, [sys_a, sys_b], {"D0": 2}, seed=0)
    assert [u.id for u in again["D0"]] == [u.id for u in subsets["D0"]]


def test_keyword_subset_ranks_by_density_not_length():
    """A 30-word utterance with 4 keywords is less keyword-rich than a 4-word one with 2:
    ranking by count would make D3 a second long-audio subset."""
    long_text = " ".join(["word"] * 26 + ["acme", "paris", "omar", "orbit"])
    long = Utterance("long", Path("/x/l.wav"), long_text, 25.0, ("acme", "paris", "omar", "orbit"), None)
    short = Utterance("short", Path("/x/s.wav"), "call acme in paris", 3.0, ("acme", "paris"), None)
    subsets, _ = select_subsets([long, short], [], {"D3": 1})
    assert [u.id for u in subsets["D3"]] == ["short"]


def test_selection_errors_are_named():
    with pytest.raises(ValueError, match="at least two ASR systems"):
        select_subsets([U(0)], [{"u0": "x"}], {"D1": 1})
    with pytest.raises(ValueError, match="no hypothesis for 1 pool utterances"):
        select_subsets([U(0), U(1)], [{"u0": "x"}, {"u0": "x", "u1": "y"}], {"D1": 1})
    with pytest.raises(ValueError, match="unknown subsets \\['D9'\\]"):
        select_subsets([U(0)], [], {"D9": 1})


def test_read_hypotheses_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "u1", "hyp": "hello world"}\n')
    (tmp_path / "text").write_text("u1 hello world\nu2\n")
    assert read_hypotheses(tmp_path / "a.jsonl") == {"u1": "hello world"}
    assert read_hypotheses(tmp_path / "text") == {"u1": "hello world", "u2": ""}
    (tmp_path / "dup").write_text("u1 a\nu1 b\n")
    with pytest.raises(ValueError, match="duplicate id 'u1'"):
        read_hypotheses(tmp_path / "dup")


def test_select_cli_writes_manifests_and_report(corpus, tmp_path):
    pool = corpus / "embedded" / "train.jsonl"
    rows = [json.loads(x) for x in pool.read_text().splitlines()]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": r["id"], "hyp": r["text"]}) + "\n" for r in rows))
    # system B drops the last word of every third utterance and loops on one
    (tmp_path / "b.txt").write_text("".join(
        f"{r['id']} {' '.join(r['text'].split()[:-1]) if i % 3 == 0 else r['text']}\n" if i != 5 else
        f"{r['id']} the the the the\n" for i, r in enumerate(rows)))
    out = run_cli("data", "select", "--pool", str(pool), "--hyps", str(tmp_path / "a.jsonl"),
                  "--hyps", str(tmp_path / "b.txt"), "--out", str(tmp_path / "sel"), "--sizes", "D0=5,D1=50,D3=4",
                  "--disagree-wer", "0.1", cwd=tmp_path, data_dir=corpus).stdout
    assert "| D1 | pairwise WER > 0.1 or a loop of 3 |" in out
    rep = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert rep["selected"]["D1"] == rep["qualified"]["D1"] == 9     # rows 0, 3, ..., 21 (8) and the loop at 5
    d1 = [json.loads(x) for x in (tmp_path / "sel" / "D1.jsonl").read_text().splitlines()]
    assert d1[0]["id"] == rows[5]["id"] and Path(d1[0]["audio"]).is_absolute()


def test_d1_with_whisper_normaliser_ignores_digit_spelling():
    """Whisper writes '720', the base 'seven hundred and twenty': the same words once both
    sides go through Whisper's normaliser, so the pair is no D1 disagreement."""
    from speech_rl.data.manifest import Utterance
    from speech_rl.data.select import select_subsets
    from speech_rl.judge import WhisperNormalizer

    pool = [Utterance(id="a", audio="a.wav", text="t", duration=2.0), Utterance(id="b", audio="b.wav", text="t",
                                                                                 duration=2.0)]
    systems = [{"a": "seven hundred and twenty people came", "b": "the cat sat"},
               {"a": "720 people came.", "b": "a dog ran"}]
    plain, _ = select_subsets(pool, systems, {"D1": 2})
    whisper, _ = select_subsets(pool, systems, {"D1": 2}, normalizer=WhisperNormalizer())
    assert [u.id for u in plain["D1"]] == ["b", "a"] and [u.id for u in whisper["D1"]] == ["b"]


def test_subset_sizes_are_parsed_in_one_place():
    from speech_rl.data.select import parse_sizes

    assert parse_sizes("D0=5,D3=0") == {"D0": 5, "D3": 0}
    with pytest.raises(ValueError, match="must look like D0=200"):
        parse_sizes("D0:5")
    with pytest.raises(ValueError, match="subsets are D0, D1, D2, D3"):
        parse_sizes("D4=5")


def test_count_options_name_the_option_and_the_unknown_name():
    from speech_rl.data.counts import parse_counts

    with pytest.raises(ValueError, match=r"--x 'A=1,B=2': unknown B; names are A, each with a count >= 0"):
        parse_counts("A=1,B=2", ["A"], option="--x", example="A=1")
    with pytest.raises(ValueError, match="count >= 1"):
        parse_counts("A=0", ["A"], option="--x", example="A=1", minimum=1)
    with pytest.raises(ValueError, match="--x ''"):
        parse_counts("", ["A"], option="--x", example="A=1")
