"""Evaluate a checkpoint on a manifest: greedy transcripts, WER with Sub/Ins/Del, keyword recall."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from speech_rl.atomic import atomic_open
from speech_rl.data.dataset import ManifestDataset, collate_asr, encoder_input
from speech_rl.data.formats import source_path
from speech_rl.data.manifest import read_manifest
from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.metrics import ASRErrorRates, TextNormalizer
from speech_rl.models.audio_llm import AudioLLM, load_policy, read_checkpoint  # noqa: F401 (CLI API)


def _batches(ds: ManifestDataset, batch_size: int, progress: bool, desc: str):
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate_asr)
    if not progress:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False)


@torch.no_grad()
def transcribe_manifest(policy: AudioLLM, manifest: str | Path, batch_size: int = 16, max_new_tokens: int = 128,
                        on_bad_row: str = "error", progress: bool = False) -> list[dict]:
    """Greedy transcripts: a list of {id, ref, hyp, keywords} in manifest order
    (``progress``: a tqdm bar over the batches on stderr)."""
    # decode every file first: a bad row (even NaN samples) is found before any transcription
    utts, _ = read_manifest(manifest, on_bad_row=on_bad_row, check_audio="full")
    ds = ManifestDataset(utts, n_mels=policy.encoder.n_mels, features=encoder_input(policy.encoder))
    engine = TorchEngine(policy.llm, policy.tokenizer.eos_id, policy.tokenizer.pad_id)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    out = []
    for batch in _batches(ds, batch_size, progress, f"decode {source_path(manifest).name}"):
        hyps = policy.transcribe(batch.feats, batch.feat_lens, engine, params)
        for uid, ref, kws, hyp in zip(batch.ids, batch.texts, batch.keywords, hyps):
            out.append({"id": uid, "ref": ref, "hyp": hyp, "keywords": kws})
    return out


def load_ctc_head(checkpoint: str | Path, policy: AudioLLM, ckpt: dict | None = None) -> torch.nn.Linear:
    """The encoder's CTC head (``ctc_head.*``) stored in a supervised (``asr_sft``) checkpoint.

    Its greedy output is a second, non-autoregressive ASR system read from the same
    checkpoint: it cannot loop or invent sentences, so where it and the LLM decoder disagree
    the LLM has likely lost its place (RL data construction, ``speech-rl data select``).
    """
    sd = (read_checkpoint(checkpoint) if ckpt is None else ckpt).get("state_dict", {})
    if "ctc_head.weight" not in sd:
        raise ValueError(f"checkpoint {checkpoint} has no CTC head (ctc_head.weight): only a supervised base "
                         "trained with ctc_weight > 0 (experiment=asr_sft_base) has one")
    w = sd["ctc_head.weight"]
    vocab, dim = policy.tokenizer.vocab_size, policy.encoder.d_model
    if tuple(w.shape) != (vocab, dim):
        raise ValueError(f"checkpoint {checkpoint}: ctc_head.weight has shape {tuple(w.shape)}, the model's "
                         f"tokenizer and encoder need ({vocab}, {dim})")
    head = torch.nn.Linear(dim, vocab)
    head.load_state_dict({"weight": w, "bias": sd["ctc_head.bias"]})
    return head.eval()


def ctc_greedy(best: list[int], blank: int) -> list[int]:
    """Collapse a frame-wise best path: merge repeats, then drop blanks.

    >>> ctc_greedy([0, 5, 5, 0, 5, 7, 7, 0], blank=0)
    [5, 5, 7]
    """
    out, prev = [], None
    for t in best:
        if t != prev and t != blank:
            out.append(t)
        prev = t
    return out


@torch.no_grad()
def ctc_transcribe_manifest(policy: AudioLLM, head: torch.nn.Linear, manifest: str | Path, batch_size: int = 16,
                            on_bad_row: str = "error", progress: bool = False) -> list[dict]:
    """Greedy CTC transcripts of the encoder (blank = the tokenizer's pad id, as in training):
    rows {id, ref, hyp, keywords} in manifest order, like ``transcribe_manifest``."""
    utts, _ = read_manifest(manifest, on_bad_row=on_bad_row, check_audio="full")
    ds = ManifestDataset(utts, n_mels=policy.encoder.n_mels, features=encoder_input(policy.encoder))
    tok = policy.tokenizer
    out = []
    for batch in _batches(ds, batch_size, progress, f"CTC {source_path(manifest).name}"):
        frames, lens = policy.encode(batch.feats, batch.feat_lens)        # (B, T', D), (B,)
        best = head(frames).argmax(-1)                                     # (B, T')
        for k, (uid, ref, kws) in enumerate(zip(batch.ids, batch.texts, batch.keywords)):
            hyp = tok.decode(ctc_greedy(best[k, : int(lens[k])].tolist(), tok.pad_id))
            out.append({"id": uid, "ref": ref, "hyp": hyp, "keywords": kws})
    return out


def score(rows: list[dict], normalizer=None) -> dict[str, float]:
    """Corpus WER / Sub / Ins / Del and keyword recall of transcript rows, both sides through
    ``normalizer`` (default ``TextNormalizer()``; ``speech_rl.judge.WhisperNormalizer`` for Whisper)."""
    m = ASRErrorRates(normalizer or TextNormalizer())
    m.update([r["ref"] for r in rows], [r["hyp"] for r in rows], [r.get("keywords") for r in rows])
    res = {k: float(v) for k, v in m.compute().items()}
    res["utterances"] = float(len(rows))
    return res


def format_table(name: str, res: dict[str, float]) -> str:
    """Markdown table of percentages."""
    cols = ["wer", "sub", "ins", "del", "keyword_recall"]
    head = "| set | utts | " + " | ".join(c.upper() if c != "keyword_recall" else "KW recall" for c in cols) + " |"
    sep = "|" + "---|" * (len(cols) + 2)
    vals = " | ".join("n/a" if res[c] != res[c] else f"{100 * res[c]:.2f}" for c in cols)
    return f"{head}\n{sep}\n| {name} | {int(res['utterances'])} | {vals} |"


def save_metrics(path: str | Path, obj: dict) -> None:
    """Metrics JSON written atomically (temp file + rename), folders created."""
    with atomic_open(path) as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def write_hyps(rows: list[dict], path: str | Path) -> None:
    """id -> hypothesis as JSONL ({"id", "hyp"} a line), written atomically."""
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "hyp": r["hyp"]}, ensure_ascii=False) + "\n")


__all__ = ["read_checkpoint", "load_policy", "transcribe_manifest", "load_ctc_head", "ctc_greedy", "ctc_transcribe_manifest", "score", "format_table", "save_metrics", "write_hyps"]
