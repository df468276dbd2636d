"""`speech-rl train experiment=tts_sft_base` end to end on a tiny corpus: synth ->
tokenizer fit -> tokens -> LM + flow + token ASR training -> a checkpoint the TTS system
loads and synthesises from."""
import math

import torch

from speech_rl.tts.system import load_tts_system
from speech_rl.tts.tokenize import read_tokens
from tests.conftest import run_cli, scalars

SMALL = ["model.lm.hidden_size=32", "model.flow.d_model=32", "model.flow.n_blocks=2", "model.flow.cond_layers=1",
         "model.token_asr.d_model=32", "model.token_asr.n_layers=1", "model.vocoder.n_iter=4"]


def test_tts_sft_base_trains_and_its_checkpoint_synthesises(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    run_cli("train", "experiment=tts_sft_base", "trainer.max_steps=8", "trainer.val_check_interval=3",
            "data.synth.splits={train: 16, val: 4}", "data.codebook_size=16", "data.batch_size=4",
            "optim.warmup_steps=0", f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", *SMALL,
            cwd=tmp_path, data_dir=data)
    toks = read_tokens(data / "asr" / "train.tokens.jsonl")
    assert len(toks) == 16 and max(max(t) for t in toks.values()) < 16
    s = scalars(run / "tensorboard")
    for k in ("train/lm", "train/flow", "train/token_asr", "val/loss", "val/token_asr_wer"):
        assert k in s and all(math.isfinite(v) for v in s[k]), k
    lm = s["train/lm"]
    assert len(lm) == 8 and sum(lm[-2:]) / 2 < lm[0] < math.log(17) + 0.5      # starts near uniform, falls
    # saved at steps 3 and 6 by the interval; last.ckpt still holds the final step 8
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    system = load_tts_system(run / "checkpoints" / "last.ckpt")
    assert system.lm.n_codes == 16 and not system.training
    wavs, mel, lens = system.synthesise([[1, 2, 3, 4, 5], []], ["en-us", "en+f3"], n_steps=2)
    assert wavs[0].shape == ((5 * 4 - 1) * 160,) and wavs[1].numel() == 0 and torch.isfinite(wavs[0]).all()

