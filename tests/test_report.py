import json

import pytest

from speech_rl.report import make_table, run_label
from tests.conftest import run_cli


def _run(tmp_path, name, rewards, data, short, long, algo="grpo"):
    d = tmp_path / name
    (d / "eval").mkdir(parents=True)
    (d / ".hydra").mkdir()
    terms = "\n".join(f"    {t}: {{weight: 1.0}}" for t in rewards)
    mans = "\n".join(f"  - /d/{x}.jsonl" for x in data)
    (d / ".hydra" / "config.yaml").write_text(f"task: asr_grpo\nalgorithm:\n  name: {algo}\nreward:\n  terms:\n{terms}\n"
                                              f"data:\n  train_manifest:\n{mans}\n")
    for s, (w, i, de) in (("test_short", short), ("test_long", long)):
        (d / "eval" / f"{s}.json").write_text(json.dumps({"wer": w, "ins": i, "del": de, "sub": w - i - de}))
    return d


def test_table_shape_base_first_and_seed_average(tmp_path):
    base = tmp_path / "base"
    (base / "eval").mkdir(parents=True)
    for s, w in (("test_short", 0.10), ("test_long", 0.40)):
        (base / "eval" / f"{s}.json").write_text(json.dumps({"wer": w, "ins": 0.2 * w, "del": 0.1 * w}))
    r1 = _run(tmp_path, "s0", ["wer", "hallucination"], ["D1", "D2"], (0.09, 0.02, 0.01), (0.30, 0.05, 0.05))
    r2 = _run(tmp_path, "s1", ["wer", "hallucination"], ["D1", "D2"], (0.11, 0.02, 0.01), (0.34, 0.05, 0.07))
    mw = _run(tmp_path, "mw", ["wer"], ["D0"], (0.1, 0.0, 0.0), (0.4, 0.0, 0.0), algo="mwer")
    assert run_label(r1) == ("R1,R2", "D1,D2") and run_label(mw) == ("MWER", "D0")
    table = make_table([r1, r2, mw], base=base)
    lines = table.splitlines()
    assert lines[0].startswith("| reward | data | runs | test_short WER | Ins | Del | test_long WER |")
    assert lines[2] == "| - | - | 1 | 10.00 | 2.00 | 1.00 | 40.00 | 8.00 | 4.00 |"
    # mean of 9 and 11 = 10, sample std = 1.41; long: 32 ± 2.83, del 6 ± 1.41
    assert lines[3] == "| R1,R2 | D1,D2 | 2 | 10.00 ± 1.41 | 2.00 ± 0.00 | 1.00 ± 0.00 | 32.00 ± 2.83 | 5.00 ± 0.00 | 6.00 ± 1.41 |"
    assert lines[4].startswith("| MWER | D0 | 1 |")


def test_report_cli_names_a_run_without_evals(tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    proc = run_cli("report", str(tmp_path / "empty"), cwd=tmp_path, data_dir=corpus, check=False)
    assert proc.returncode == 2 and "has no eval/*.json" in proc.stderr


def _tts_run(tmp_path, name, algo, sample_filter, terms, wer, sim, seconds, task="tts_rl"):
    d = tmp_path / name
    (d / "eval").mkdir(parents=True)
    (d / ".hydra").mkdir()
    t = "\n".join(f"    {x}: {{weight: 1.0}}" for x in terms)
    (d / ".hydra" / "config.yaml").write_text(
        f"module:\n  _target_: speech_rl.modules.{ {'tts_rl': 'tts_rl.TTSRLModule', 'tts_sft': 'tts_sft.TTSSFTModule'}[task]}"
        f"\nalgorithm:\n  name: {algo}\n  sample_filter: {str(sample_filter).lower()}\n"
        f"reward:\n  terms:\n{t}\n")
    (d / "eval" / "tts_test.json").write_text(json.dumps(
        {"wer": wer, "sub": wer / 2, "ins": wer / 4, "del": wer / 4, "speaker_sim": sim, "seconds": seconds}))
    return d


def test_tts_table_has_table2_rows_and_duration_ratio_to_the_base(tmp_path):
    from speech_rl.report import make_tts_table, tts_run_label

    base = _tts_run(tmp_path, "base", "x", False, [], 0.40, 0.80, 2.0, task="tts_sft")
    diff = _tts_run(tmp_path, "d", "diffro", True, ["wer", "duration"], 0.30, 0.78, 2.1)
    g0 = _tts_run(tmp_path, "g0", "grpo", False, ["wer"], 0.36, 0.79, 2.2)
    g1 = _tts_run(tmp_path, "g1", "grpo", False, ["wer"], 0.34, 0.79, 1.8)
    cf = _tts_run(tmp_path, "cf", "combined", True, ["wer", "duration", "diversity"], 0.28, 0.79, 2.0)
    assert tts_run_label(base) == ("-", "-")
    assert tts_run_label(diff) == ("DiffRO + filter", "R1")  # DiffRO's signal is the token ASR alone
    assert tts_run_label(cf) == ("Combined + filter", "R1,R2,R3")
    lines = make_tts_table([diff, g0, g1, cf], base=base).splitlines()
    assert lines[0].startswith("| method | reward | runs | WER | Sub | Ins | Del | SS | MOS | seconds | duration ratio |")
    assert lines[2] == "| - | - | 1 | 40.00 | 20.00 | 10.00 | 10.00 | 80.00 | n/a | 2.00 | 1.000 |"
    assert lines[4] == ("| GRPO | R1 | 2 | 35.00 ± 1.41 | 17.50 ± 0.71 | 8.75 ± 0.35 | 8.75 ± 0.35 | 79.00 ± 0.00 | n/a "
                        "| 2.00 ± 0.28 | 1.000 ± 0.141 |")
    assert lines[5].startswith("| Combined + filter | R1,R2,R3 | 1 | 28.00 |")
    # RL runs evaluated at a step (eval/tts_test_step600.json) against the base's own file
    (cf / "eval" / "tts_test.json").rename(cf / "eval" / "tts_test_step600.json")
    with pytest.raises(FileNotFoundError, match="base has no eval/tts_test_step600.json"):
        make_tts_table([cf], base=base, test_set="tts_test_step600")
    lines = make_tts_table([cf], base=base, test_set="tts_test_step600", base_set="tts_test").splitlines()
    assert lines[2].startswith("| - | - | 1 | 40.00 |") and lines[3].startswith("| Combined + filter | R1,R2,R3 | 1 | 28.00 |")
    # files pooled over several sampling seeds (eval-tts --seed 0 1 ...) say so in the runs cell
    ev = json.loads((cf / "eval" / "tts_test_step600.json").read_text())
    (cf / "eval" / "tts_test_step600.json").write_text(json.dumps(dict(ev, seeds=[0, 1, 2, 3, 4, 5])))
    (base / "eval" / "tts_test.json").write_text(json.dumps(dict(json.loads((base / "eval" / "tts_test.json")
                                                                            .read_text()), seeds=list(range(10)))))
    lines = make_tts_table([cf], base=base, test_set="tts_test_step600", base_set="tts_test").splitlines()
    assert lines[2].startswith("| - | - | 1 x 10 draws | 40.00 |")
    assert lines[3].startswith("| Combined + filter | R1,R2,R3 | 1 x 6 draws | 28.00 |")
    # files with the judge's figures (eval-tts --judge): its WER is the headline, the own ASR's beside it
    for run, judge_wer in ((base, 0.50), (cf, 0.45)):
        f = next((run / "eval").glob("*.json"))
        ev = json.loads(f.read_text())
        f.write_text(json.dumps(dict(ev, judge_wer=judge_wer, judge_sub=0.3, judge_ins=0.1, judge_del=0.1)))
    lines = make_tts_table([cf], base=base, test_set="tts_test_step600", base_set="tts_test").splitlines()
    assert lines[0].startswith("| method | reward | runs | WER (judge) | Sub | Ins | Del | WER (own ASR) | SS |")
    assert lines[2].startswith("| - | - | 1 x 10 draws | 50.00 | 30.00 | 10.00 | 10.00 | 40.00 |")
    assert lines[3].startswith("| Combined + filter | R1,R2,R3 | 1 x 6 draws | 45.00 |")


def test_tts_report_cli_names_a_run_without_the_tts_eval(tmp_path, corpus):
    d = tmp_path / "r"
    (d / "eval").mkdir(parents=True)
    (d / "eval" / "test_short.json").write_text(json.dumps({"wer": 0.1}))
    proc = run_cli("report", "--tts", str(d), cwd=tmp_path, data_dir=corpus, check=False)
    assert proc.returncode == 2 and "has no eval/tts_test.json" in proc.stderr
