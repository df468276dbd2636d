"""`speech-rl eval --decoder ctc`: the supervised base's CTC head as a second ASR system."""
import pytest
import torch

from datamodules.asr import ManifestDataset, collate_asr
from speech_rl.data.manifest import read_manifest
from speech_rl.evaluate import ctc_greedy, ctc_transcribe_manifest, load_ctc_head, load_policy
from speech_rl.modules.asr_sft import ASRSFTModule
from speech_rl.modules.optim import load_optim
from tests.conftest import TINY_MODEL


def _sft_checkpoint(path, ctc_weight=0.3):
    torch.manual_seed(0)
    m = ASRSFTModule(TINY_MODEL, load_optim(lr=1e-3, betas=[0.9, 0.98]), ctc_weight=ctc_weight)
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, path)
    return m


def test_ctc_transcripts_match_the_modules_own_head_one_utterance_at_a_time(corpus, tmp_path):
    m = _sft_checkpoint(tmp_path / "sft.ckpt").eval()
    policy = load_policy(tmp_path / "sft.ckpt")
    head = load_ctc_head(tmp_path / "sft.ckpt", policy)
    manifest = corpus / "embedded" / "val.jsonl"
    rows = ctc_transcribe_manifest(policy, head, manifest, batch_size=4)       # padded batches
    utts = read_manifest(manifest)[0]
    ds = ManifestDataset(utts)
    assert [r["id"] for r in rows] == [u.id for u in utts]
    tok = m.policy.tokenizer
    with torch.no_grad():
        for i, r in enumerate(rows):
            b = collate_asr([ds[i]])
            frames, lens = m.policy.encode(b.feats, b.feat_lens)
            best = m.ctc_head(frames)[0, : int(lens[0])].argmax(-1).tolist()
            assert r["hyp"] == tok.decode(ctc_greedy(best, tok.pad_id)) and r["ref"] == utts[i].text
    assert any(r["hyp"] for r in rows)                 # an untrained head emits characters, not only blanks


def test_a_checkpoint_without_a_ctc_head_is_named(tmp_path):
    _sft_checkpoint(tmp_path / "no_ctc.ckpt", ctc_weight=0.0)
    policy = load_policy(tmp_path / "no_ctc.ckpt")
    with pytest.raises(ValueError, match=r"no_ctc.ckpt has no CTC head"):
        load_ctc_head(tmp_path / "no_ctc.ckpt", policy)


def test_export_keeps_the_model_and_ctc_head_and_drops_the_rest(corpus, tmp_path):
    from speech_rl.cli import main

    m = _sft_checkpoint(tmp_path / "sft.ckpt").eval()
    full = torch.load(tmp_path / "sft.ckpt", weights_only=False)
    full["optimizer_states"] = [{"state": {0: {"exp_avg": torch.zeros(1000, 1000)}}}]   # what export drops
    torch.save(full, tmp_path / "sft.ckpt")
    assert main(["export", str(tmp_path / "sft.ckpt"), str(tmp_path / "small.pt")]) == 0
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert set(small) == {"hyper_parameters", "state_dict", "speech_rl_export"}
    assert all(v.dtype == torch.float16 for v in small["state_dict"].values() if v.is_floating_point())
    assert (tmp_path / "small.pt").stat().st_size < 0.2 * (tmp_path / "sft.ckpt").stat().st_size
    policy = load_policy(tmp_path / "small.pt")                 # loads back into an fp32 model
    head = load_ctc_head(tmp_path / "small.pt", policy)
    for name, p in policy.named_parameters():
        assert p.dtype == torch.float32
        assert torch.allclose(p, m.policy.state_dict()[name], atol=1e-3, rtol=1e-3), name
    assert torch.allclose(head.weight, m.ctc_head.weight, atol=1e-3)
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
