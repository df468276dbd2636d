"""`speech-rl train` on a Kaldi data directory (segments of longer recordings) with a Lhotse
cut set as validation, resumed exactly; `speech-rl eval` on a Hugging Face dataset gives the
figures of the same audio as JSONL; `data convert` / `data export` through the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech_rl.data.manifest import read_manifest
from tests.conftest import run_cli, scalars

datasets = pytest.importorskip("datasets", reason="pip install -e '.[formats]'")
lhotse = pytest.importorskip("lhotse", reason="pip install -e '.[formats]'")

ARGS = ["experiment=asr_grpo_tiny", "data.synth=null", "trainer.val_check_interval=2",
        "callbacks.checkpoint.every_n_train_steps=2", "trainer.enable_progress_bar=false", "optim.lr=1e-3",
        "optim.total_steps=4"]
TAGS = ("train/reward/mean", "train/loss", "train/kl", "val/wer")


@pytest.fixture(scope="module")
def sources(corpus, tmp_path_factory):
    """The corpus's train split as a Kaldi directory (pairs of utterances joined into one
    recording, cut by `segments`), its val split as a Lhotse cut set written by lhotse and as
    a Hugging Face dataset saved with save_to_disk (audio embedded)."""
    root = tmp_path_factory.mktemp("formats")
    train, _ = read_manifest(corpus / "embedded" / "train.jsonl")
    rec_dir = root / "recordings"
    rec_dir.mkdir()
    wav_scp, segments, text, utt2spk = [], [], [], []
    gap = np.zeros(4000, dtype="float32")
    for i in range(0, len(train), 2):
        pair = train[i:i + 2]
        audio, start = [], 0.0
        for u in pair:
            x, sr = sf.read(str(u.audio), dtype="float32")
            segments.append(f"{u.id} rec{i:03d} {start:.4f} {start + len(x) / sr:.4f}")
            text.append(f"{u.id} {u.text}")
            utt2spk.append(f"{u.id} {u.speaker or 'spk'}")
            audio += [x, gap]
            start += (len(x) + len(gap)) / sr
        sf.write(str(rec_dir / f"rec{i:03d}.wav"), np.concatenate(audio), 16000, subtype="PCM_16")
        wav_scp.append(f"rec{i:03d} {rec_dir / f'rec{i:03d}.wav'}")
    kaldi = root / "kaldi_train"
    kaldi.mkdir()
    for name, lines in (("wav.scp", wav_scp), ("segments", segments), ("text", text), ("utt2spk", utt2spk)):
        (kaldi / name).write_text("".join(x + "\n" for x in lines))

    val, _ = read_manifest(corpus / "embedded" / "val.jsonl")
    cuts = []
    for u in val:
        rec = lhotse.Recording.from_file(u.audio, recording_id=u.id)
        sup = lhotse.SupervisionSegment(id=u.id, recording_id=u.id, start=0.0, duration=rec.duration, text=u.text,
                                        custom={"keywords": list(u.keywords or [])})
        cuts.append(lhotse.MonoCut(id=u.id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                   supervisions=[sup]))
    lhotse.CutSet.from_cuts(cuts).to_file(root / "val_cuts.jsonl.gz")
    ds = datasets.Dataset.from_dict({"id": [u.id for u in val], "audio": [str(u.audio) for u in val],
                                     "transcription": [u.text for u in val],
                                     "keywords": [list(u.keywords or []) for u in val]})
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(root / "val_hf"))
    return {"kaldi": kaldi, "lhotse": root / "val_cuts.jsonl.gz", "hf": root / "val_hf"}


def _by_step(run_dir):
    out = {}
    for tag, values in scalars(run_dir).items():
        if tag in TAGS:
            out[tag] = values
    return out


@pytest.mark.timeout(900)
def test_train_on_kaldi_and_lhotse_resumes_exactly_and_eval_reads_a_hf_dataset(sources, corpus, tmp_path):
    data = [f"data.train_manifest={sources['kaldi']}", f"data.val_manifest={sources['lhotse']}"]
    ref, split = tmp_path / "ref", tmp_path / "split"
    run_cli("train", *ARGS, *data, "trainer.max_steps=4", f"hydra.run.dir={ref}", cwd=tmp_path, data_dir=corpus)
    run_cli("train", *ARGS, *data, "trainer.max_steps=2", f"hydra.run.dir={split}", cwd=tmp_path, data_dir=corpus)
    out = run_cli("train", *ARGS, *data, "trainer.max_steps=4", f"hydra.run.dir={split}", "resume=auto",
                  cwd=tmp_path, data_dir=corpus)
    assert "resume=auto: resuming from" in out.stdout + out.stderr
    a, b = _by_step(ref), _by_step(split)
    for tag in TAGS:
        assert len(a[tag]) == (2 if tag == "val/wer" else 4), (tag, a[tag])
        assert b[tag] == pytest.approx(a[tag], rel=1e-5, abs=1e-6), (tag, a[tag], b[tag])

    ckpt = str(ref / "checkpoints" / "last.ckpt")
    on_json = json.loads(run_cli("eval", str(corpus / "embedded" / "val.jsonl"), ckpt, "--json", cwd=tmp_path,
                                 data_dir=corpus).stdout)
    on_hf = json.loads(run_cli("eval", str(sources["hf"]), ckpt, "--json", "--field", "text=transcription",
                               cwd=tmp_path, data_dir=corpus).stdout)
    assert on_hf == on_json
    missing = run_cli("eval", str(sources["hf"]), ckpt, cwd=tmp_path, data_dir=corpus, check=False)
    assert missing.returncode != 0 and "no text column 'text'" in missing.stderr and "transcription" in missing.stderr


def test_convert_and_export_through_the_command_line(sources, corpus, tmp_path):
    out = run_cli("data", "convert", str(sources["hf"]), str(tmp_path / "val.jsonl"), "--field",
                  "text=transcription", cwd=tmp_path, data_dir=corpus).stdout
    assert "8 utterances" in out
    rows = [json.loads(x) for x in (tmp_path / "val.jsonl").read_text().splitlines()]
    assert all(Path(r["audio"]).parent.samefile(tmp_path / "val_wav") for r in rows)
    run_cli("data", "export", str(sources["kaldi"]), "--kaldi", str(tmp_path / "k"), "--lhotse",
            str(tmp_path / "c.jsonl.gz"), cwd=tmp_path, data_dir=corpus)
    again = read_manifest(tmp_path / "c.jsonl.gz")[0]
    assert [u.id for u in again] == sorted(u.id for u in read_manifest(sources["kaldi"])[0])
    bad = run_cli("data", "convert", str(sources["kaldi"]), str(tmp_path / "x.txt"), cwd=tmp_path,
                  data_dir=corpus, check=False)
    assert bad.returncode != 0 and "must be a .jsonl file" in bad.stderr
