"""The ASR base shipped in speech_rl/assets: the file its provenance names, and a model
that reads held-out voices (the README's main job starts from it)."""
import hashlib
import re
from pathlib import Path

import pytest

from speech_rl.pipeline import SHIPPED_BASE, check_work_base, resolve_base


def test_shipped_base_is_the_documented_file():
    readme = (SHIPPED_BASE.parent / "README.md").read_text()
    documented = re.search(r"sha256 `([0-9a-f]{64})`", readme).group(1)
    assert hashlib.sha256(SHIPPED_BASE.read_bytes()).hexdigest() == documented
    assert SHIPPED_BASE.stat().st_size < 10 * 2**20
    assert resolve_base("shipped") == SHIPPED_BASE and resolve_base("train") is None


@pytest.mark.timeout(300)
def test_shipped_base_reads_held_out_voices(tmp_path):
    """40 short utterances by the 3 test voices, sentences drawn with another seed than
    the pipeline's test set. Measured here: LLM 3.1% WER, CTC head 32.4% (9.6% for the
    LLM on the 200 of test_short, README); the bars leave room for a noisy sample."""
    from speech_rl.data.synth import synth_corpus
    from speech_rl.evaluate import ctc_transcribe_manifest, load_ctc_head, load_policy, score, transcribe_manifest

    manifest = synth_corpus(tmp_path, {"check": {"n": 40, "voices": "test"}}, seed=7)["check"]
    policy = load_policy(SHIPPED_BASE)
    llm = score(transcribe_manifest(policy, manifest, batch_size=20, max_new_tokens=200))
    ctc = score(ctc_transcribe_manifest(policy, load_ctc_head(SHIPPED_BASE, policy), manifest, batch_size=20))
    assert llm["utterances"] == 40 and llm["wer"] < 0.15, llm
    assert ctc["wer"] < 0.5, ctc


def test_work_folder_is_tied_to_one_base(tmp_path):
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.write_bytes(b"one"), b.write_bytes(b"two")
    work = tmp_path / "work"
    check_work_base(work, a)
    check_work_base(work, a)                       # the same base again: fine
    with pytest.raises(ValueError, match=r"holds stages made from base .*a\.ckpt.* not .*b\.ckpt.*use another --work"):
        check_work_base(work, b)
    with pytest.raises(ValueError, match="not one trained with --base train"):
        check_work_base(work, None)
    with pytest.raises(FileNotFoundError, match="nope.ckpt does not exist"):
        resolve_base(tmp_path / "nope.ckpt")
