"""`experiment=asr_sft_open` end to end on four flite utterances: the pretrained Whisper
encoder (CTranslate2 files converted on load, frozen, trimmed window) under a small
decoder learns them, and `speech-rl eval` reads the checkpoint back."""
from __future__ import annotations

import json

from tests.conftest import run_cli, scalars
from tests.open_world import flite_manifest, need_flite, need_whisper


@need_whisper
@need_flite
def test_open_sft_learns_and_evaluates(tmp_path):
    m = flite_manifest(tmp_path / "m")
    run = tmp_path / "run"
    run_cli("train", "experiment=asr_sft_open", f"data.train_manifest=[{m}]", "data.train_weights=null",
            f"data.val_manifest={m}", "data.synth=null", "data.batch_size=4", "trainer.max_steps=40",
            "trainer.val_check_interval=40", "optim.warmup_steps=0", "optim.lr=3e-3", "model.llm.hidden_size=64",
            "model.llm.num_layers=2", "module.val_max_new_tokens=80", f"hydra.run.dir={run}",
            cwd=tmp_path, data_dir=tmp_path, timeout=600)
    ce = scalars(run)["train/ce"]
    assert sum(ce[-5:]) / 5 < 0.6 * sum(ce[:5]) / 5, ce
    out = tmp_path / "e.json"
    run_cli("eval", str(m), str(run / "checkpoints" / "last.ckpt"), "--max-new-tokens", "80", "--save", str(out),
            "--normalizer", "whisper", cwd=tmp_path, data_dir=tmp_path)
    res = json.loads(out.read_text())
    assert res["utterances"] == 4 and res["normalizer"] == "whisper" and res["wer"] == res["wer"]
