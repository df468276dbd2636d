"""`speech-rl train experiment=tts_sft_base` end to end on a tiny corpus: synth ->
tokenizer fit -> tokens -> LM + flow + token ASR training -> a checkpoint the TTS system
loads and synthesises from."""
import importlib.util
import math
import statistics

import pytest
import torch

from speech_rl.tts.system import load_tts_system
from speech_rl.tts.tokenize import read_tokens
from tests.conftest import run_cli, scalars

SMALL = ["model.lm.hidden_size=32", "model.flow.d_model=32", "model.flow.n_blocks=2", "model.flow.cond_layers=1",
         "model.token_asr.d_model=32", "model.token_asr.n_layers=1", "model.vocoder.n_iter=4"]
# the same small system as a ``build_tts_system`` dict, for tests that build it directly
TINY_TTS = {"tokenizer": {"_target_": "speech_rl.data.tokenizer.CharTokenizer"}, "n_codes": 16,
            "speakers": ["en-us", "en+f3"], "lm": {"hidden_size": 32}, "flow": {"d_model": 32, "n_blocks": 2},
            "token_asr": {"d_model": 32, "n_layers": 1},
            "vocoder": {"_target_": "speech_rl.tts.vocoder.GriffinLimVocoder", "n_iter": 4}, "flow_steps": 2}


def test_tts_sft_base_trains_and_its_checkpoint_synthesises(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    run_cli("train", "experiment=tts_sft_base", "trainer.max_steps=8", "trainer.val_check_interval=3",
            "data.synth.splits={train: 16, val: 4}", "data.codebook_size=16", "data.batch_size=4",
            "optim.warmup_steps=0", f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", *SMALL,
            "model.flow.mel_norm_utts=6", "model.flow.prior_weight=0.5", cwd=tmp_path, data_dir=data)
    toks = read_tokens(data / "asr" / "train.tokens.jsonl")
    assert len(toks) == 16 and max(max(t) for t in toks.values()) < 16
    s = scalars(run / "tensorboard")
    for k in ("train/lm", "train/flow", "train/token_asr", "val/loss", "val/token_asr_wer"):
        assert k in s and all(math.isfinite(v) for v in s[k]), k
    # with a mel prior the flow objective's parts are logged apart: flow = cfm + 0.5 x prior
    assert all(math.isclose(f, c + 0.5 * p, rel_tol=1e-5)
               for f, c, p in zip(s["train/flow"], s["train/flow_cfm"], s["train/flow_prior"], strict=True))
    lm = s["train/lm"]
    assert len(lm) == 8 and sum(lm[-2:]) / 2 < lm[0] < math.log(17) + 0.5      # starts near uniform, falls
    # saved at steps 3 and 6 by the interval; last.ckpt still holds the final step 8
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    system = load_tts_system(run / "checkpoints" / "last.ckpt")
    assert system.lm.n_codes == 16 and not system.training
    # the flow's mel statistics: fitted once at the start, from 6 evenly spaced training rows
    # (0, 3, 6, 9, 12, 15 of 16), and kept in the checkpoint
    from speech_rl.data.features import LogMel
    from speech_rl.data.manifest import read_manifest, utterance_audio

    rows = read_manifest(data / "asr" / "train.jsonl")[0]
    frames = torch.cat([LogMel()(torch.from_numpy(utterance_audio(rows[i], 16000))) for i in (0, 3, 6, 9, 12, 15)])
    assert bool(system.flow.mel_stats_fitted)
    assert torch.allclose(system.flow.mel_mean, frames.mean(0), atol=1e-5)
    assert torch.allclose(system.flow.mel_std, frames.std(0).clamp_min(1e-3), atol=1e-5)
    wavs, mel, lens = system.synthesise([[1, 2, 3, 4, 5], []], ["en-us", "en+f3"], n_steps=2)
    assert wavs[0].shape == ((5 * 4 - 1) * 160,) and wavs[1].numel() == 0 and torch.isfinite(wavs[0]).all()



def test_eval_tts_scores_a_text_list_written_elsewhere(tmp_path, capsys):
    """eval-tts on a tiny (untrained) TTS system and ASR: every metric comes out, wavs are written."""
    import json

    from speech_rl.cli import main
    from speech_rl.models.audio_llm import build_audio_llm
    from speech_rl.tts.system import build_tts_system
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    tts_model = TINY_TTS
    tts = build_tts_system(**tts_model)
    torch.save({"hyper_parameters": {"model": tts_model}, "state_dict": {f"tts.{k}": v for k, v in tts.state_dict().items()}},
               tmp_path / "tts.ckpt")
    asr = build_audio_llm(**TINY_MODEL)
    torch.save({"hyper_parameters": {"model": TINY_MODEL},
                "state_dict": {f"policy.{k}": v for k, v in asr.state_dict().items()}}, tmp_path / "asr.ckpt")
    texts = tmp_path / "elsewhere.jsonl"
    texts.write_text('{"id": "a", "text": "call alice in paris"}\n{"id": "b", "text": "hello", "speaker": "en+f3"}\n')
    out = tmp_path / "eval" / "tts.json"
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt"),
                 "--speaker", "en-us", "--max-new-tokens", "20", "--wav-dir", str(tmp_path / "wav"),
                 "--base-seconds", "0.5", "--save", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in ("wer", "sub", "ins", "del", "seconds", "finished", "duration_ratio"):
        assert k in res and math.isfinite(res[k]), k
    assert res["utterances"] == 2 and res["duration_ratio"] == res["seconds"] / 0.5
    assert res["flow_temperature"] == 1.0                  # the checkpoint's model.flow_temperature
    assert sorted(p.name for p in (tmp_path / "wav").iterdir()) == ["a.wav", "b.wav", "hyps.jsonl"]
    if importlib.util.find_spec("faster_whisper"):        # --judge auto: Whisper reads the same wavs, headline
        from speech_rl.judge import DEFAULT_MODEL

        assert res["judge"] == DEFAULT_MODEL and res["judge_normalizer"] == "whisper"
        for k in ("judge_wer", "judge_sub", "judge_ins", "judge_del"):
            assert math.isfinite(res[k]), k
        assert all("judge_hyp" in json.loads(x) for x in (tmp_path / "wav" / "hyps.jsonl").read_text().splitlines())
    # several sampling seeds: the pooled WER is the mean of the seeds' (same references), and a
    # seed's figures do not depend on the other seeds given (seed 0 alone == the run above)
    multi = tmp_path / "eval" / "tts_3seeds.json"
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt"),
                 "--speaker", "en-us", "--max-new-tokens", "20", "--seed", "0", "1", "2",
                 "--wav-dir", str(tmp_path / "wav3"), "--save", str(multi)]) == 0
    m = json.loads(multi.read_text())
    assert m["seeds"] == [0, 1, 2] and [p["seed"] for p in m["per_seed"]] == [0, 1, 2]
    assert m["per_seed"][0]["wer"] == res["wer"] and m["per_seed"][0]["seconds"] == res["seconds"]
    assert m["wer"] == pytest.approx(sum(p["wer"] for p in m["per_seed"]) / 3, abs=1e-6)
    assert m["utterances"] == 2
    assert m["wer_seed_std"] == pytest.approx(statistics.stdev(p["wer"] for p in m["per_seed"]), abs=1e-9)
    assert len({round(p["seconds"], 6) for p in m["per_seed"]}) > 1, "the seeds drew the same samples"
    assert sorted(p.name for p in (tmp_path / "wav3").iterdir()) == ["seed0", "seed1", "seed2"]
    capsys.readouterr()
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt"),
                 "--speaker", "en-us", "--seed", "1", "1"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt")]) == 2
    assert "elsewhere.jsonl:1: no 'speaker'" in capsys.readouterr().err
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--judge", "none", "--speaker", "en-us"]) == 2
    assert "needs a recogniser" in capsys.readouterr().err
    cold = tmp_path / "eval" / "tts_t0.json"               # the start noise set at evaluation, recorded
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt"), "--judge",
                 "none", "--speaker", "en-us", "--max-new-tokens", "20", "--flow-temperature", "0",
                 "--save", str(cold)]) == 0
    assert json.loads(cold.read_text())["flow_temperature"] == 0.0
    capsys.readouterr()
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt"),
                 "--speaker", "en-us", "--flow-temperature", "-0.5"]) == 2
    assert "flow_temperature must be >= 0, got -0.5" in capsys.readouterr().err
    texts.write_text('{"text": "hi", "speaker": "fr"}\n')
    assert main(["eval-tts", str(texts), str(tmp_path / "tts.ckpt"), "--asr", str(tmp_path / "asr.ckpt")]) == 2
    assert "speakers ['fr'] are not in the TTS model's table" in capsys.readouterr().err


def _tiny_sft(weights):
    from speech_rl.modules.optim import load_optim
    from speech_rl.modules.tts_sft import TTSSFTModule

    return TTSSFTModule(TINY_TTS, load_optim(lr=1e-2, betas=[0.9, 0.98]), loss_weights=weights)


def test_a_zero_loss_weight_freezes_its_part_and_skips_its_loss():
    """experiment=tts_token_asr: with lm and flow at weight 0, one optimiser step moves only
    the token ASR; validation still reports all three losses. All weights 0 is refused."""
    from datamodules.tts import TTSBatch

    torch.manual_seed(0)
    module = _tiny_sft({"lm": 0.0, "flow": 0.0})
    assert module.active == ("token_asr",)
    batch = TTSBatch(["call alice", "hi"], ["en-us", "en+f3"], torch.randint(0, 16, (2, 12)), torch.tensor([12, 9]),
                     torch.randn(2, 48, 80), torch.tensor([48, 36]), ["a", "b"], [0.5, 0.4])
    before = {k: v.clone() for k, v in module.tts.state_dict().items()}
    opt = module.configure_optimizers()["optimizer"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == \
        sum(p.numel() for p in module.tts.token_asr.parameters())
    module.training_step(batch, 0).backward()          # logging outside a Trainer is a no-op warning
    opt.step()
    after = module.tts.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"token_asr"}
    assert set(module.losses(batch)) == {"lm", "flow", "token_asr", "loss"}
    with pytest.raises(ValueError, match="every weight is 0"):
        _tiny_sft({"lm": 0.0, "flow": 0.0, "token_asr": 0.0})


def test_init_parts_takes_the_named_parts_and_keeps_the_rest_fresh(tmp_path):
    """model.init_parts=[flow]: a new, larger LM beside a trained flow decoder. The flow
    (and its mel statistics buffers) come from the checkpoint, the LM keeps its own init; the
    checkpoint of such a run rebuilds without the init_from file. Bad part names, a part the
    checkpoint lacks and init_parts without init_from are refused by name."""
    from speech_rl.tts.system import build_tts_system, load_tts_system

    torch.manual_seed(0)
    src_model = dict(TINY_TTS, flow={**TINY_TTS["flow"], "mel_norm_utts": 4})
    src = build_tts_system(**src_model)
    src.flow.fit_mel_stats([torch.randn(30, 80) * 2 + 1])
    path = tmp_path / "src.ckpt"
    torch.save({"hyper_parameters": {"model": src_model},
                "state_dict": {f"tts.{k}": v for k, v in src.state_dict().items()}}, path)
    big = dict(src_model, lm={"hidden_size": 48, "num_layers": 3}, init_from=str(path), init_parts=["flow"])
    torch.manual_seed(1)
    fresh = build_tts_system(**dict(big, init_from=None, init_parts=None))
    torch.manual_seed(1)
    dst = build_tts_system(**big)
    for k, v in src.flow.state_dict().items():
        assert torch.equal(dst.flow.state_dict()[k], v), k
    assert bool(dst.flow.mel_stats_fitted)
    for k, v in fresh.lm.state_dict().items():                 # the LM is the fresh 48 x 3 one
        assert torch.equal(dst.lm.state_dict()[k], v), k
    for k, v in fresh.token_asr.state_dict().items():          # not named: not taken
        assert torch.equal(dst.token_asr.state_dict()[k], v), k
    assert not torch.equal(dst.token_asr.state_dict()["head.weight"], src.token_asr.state_dict()["head.weight"])
    run = tmp_path / "run.ckpt"
    torch.save({"hyper_parameters": {"model": big},
                "state_dict": {f"tts.{k}": v for k, v in dst.state_dict().items()}}, run)
    path.unlink()                                              # a finished run stands on its own
    back = load_tts_system(run)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in dst.state_dict().items())
    torch.save({"hyper_parameters": {"model": src_model},
                "state_dict": {f"tts.{k}": v for k, v in src.state_dict().items()}}, path)
    with pytest.raises(ValueError, match=r"init_parts \['vocoder'\]: each must be one of lm, flow, token_asr"):
        build_tts_system(**dict(big, init_parts=["vocoder"]))
    with pytest.raises(ValueError, match="TTS lm of another shape"):
        build_tts_system(**dict(big, init_parts=["lm"]))
    with pytest.raises(ValueError, match="needs model.init_from"):
        build_tts_system(**dict(big, init_from=None))
    torch.save({"state_dict": {f"tts.{k}": v for k, v in src.state_dict().items() if not k.startswith("flow.")}}, path)
    with pytest.raises(ValueError, match=r"has no tts.flow.\* weights"):
        build_tts_system(**big)
