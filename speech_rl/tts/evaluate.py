"""`speech-rl eval-tts`: synthesise a text list with a TTS checkpoint and score it.

Input: a JSONL of ``{"id", "text", "speaker"}`` rows (a manifest works: its audio is
ignored; ``speaker`` may be left out when ``--speaker`` is given). Each text is
synthesised (TTS LM sampling -> flow decoder -> vocoder) and scored by

  wer / sub / ins / del   an ASR that is *not* the TTS reward model: a speech-rl ASR
                          checkpoint transcribing the waveform (``--asr``)
  speaker_sim             Resemblyzer cosine to the speaker's reference embedding
                          (``--reference`` manifest; optional)
  mos                     DNSMOS overall (optional, ``--mos``)
  seconds                 mean synthesised duration; with ``--base-seconds`` (from the
                          base model's eval file) the ratio to the base
  finished                share of samples that emitted the stop token

Wavs go to ``--wav-dir`` when given (to listen to), metrics to ``--save``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from speech_rl.engines import SamplingParams, TorchEngine


def read_texts(path: str | Path, speaker: str | None = None) -> list[dict]:
    """Rows {id, text, speaker}; a row without text, or without a speaker when no default
    is given, raises naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text list {p} does not exist")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{n}: not JSON ({exc})") from exc
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or not r["text"].strip():
            raise ValueError(f"{p}:{n}: needs a non-empty 'text'")
        spk = r.get("speaker") or speaker
        if not spk:
            raise ValueError(f"{p}:{n}: no 'speaker' (give one with --speaker)")
        rows.append({"id": str(r.get("id", n)), "text": r["text"], "speaker": spk})
    if not rows:
        raise ValueError(f"text list {p} has no rows")
    return rows


@torch.no_grad()
def synthesise_texts(system, rows: list[dict], params: SamplingParams, batch_size: int = 16, seed: int = 0
                     ) -> list[dict]:
    """-> rows with ``tokens``, ``audio`` (np.float32 at the vocoder's rate), ``finished``."""
    engine = TorchEngine(system.lm.llm, system.lm.eos_id, system.lm.pad_id, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        prompt, mask = system.lm([r["text"] for r in chunk], [r["speaker"] for r in chunk])
        ro = engine.generate(prompt, mask, 1, params)
        toks = ro.response_ids()
        wavs, _, _ = system.synthesise(toks, [r["speaker"] for r in chunk], gen=gen)
        for r, t, w, f in zip(chunk, toks, wavs, ro.finished):
            out.append({**r, "tokens": t, "audio": w.cpu().numpy().astype(np.float32), "finished": bool(f)})
    return out


def evaluate_tts(checkpoint: str, texts: str, asr: str, speaker: str | None = None, reference: str | None = None,
                 mos: bool = False, base_seconds: float | None = None, wav_dir: str | None = None,
                 max_new_tokens: int = 500, temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> dict:
    from speech_rl.evaluate import load_policy, score
    from speech_rl.tts.system import load_tts_system

    system = load_tts_system(checkpoint)
    rows = read_texts(texts, speaker)
    unknown = sorted({r["speaker"] for r in rows} - set(system.speakers))
    if unknown:
        raise ValueError(f"speakers {unknown} are not in the TTS model's table {system.speakers}")
    samples = synthesise_texts(system, rows, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                            top_k=top_k), seed=seed)
    sr = system.vocoder.sample_rate
    recogniser = load_policy(asr)
    eng = TorchEngine(recogniser.llm, recogniser.tokenizer.eos_id, recogniser.tokenizer.pad_id)
    hyps = recogniser.transcribe_waveforms([torch.from_numpy(x["audio"]) for x in samples], eng,
                                           SamplingParams(max_new_tokens=512, temperature=0.0), sample_rate=sr)
    for x, h in zip(samples, hyps):
        x["hyp"] = h
    res = score([{"ref": x["text"], "hyp": x["hyp"], "keywords": None} for x in samples])
    res.pop("keyword_recall", None)
    res["seconds"] = float(np.mean([len(x["audio"]) / sr for x in samples]))
    res["finished"] = float(np.mean([x["finished"] for x in samples]))
    if base_seconds:
        res["duration_ratio"] = res["seconds"] / base_seconds
    audio, rates, spk = [x["audio"] for x in samples], [sr] * len(samples), [x["speaker"] for x in samples]
    if reference:
        from rewards.tts import SpeakerSimReward

        res["speaker_sim"] = float(np.mean(SpeakerSimReward(reference)(audio=audio, sample_rate=rates, speaker=spk)))
    if mos:
        from rewards.tts import DNSMOSReward

        res["mos"] = float(np.mean(DNSMOSReward()(audio=audio, sample_rate=rates)))
    if wav_dir:
        import soundfile as sf

        d = Path(wav_dir)
        d.mkdir(parents=True, exist_ok=True)
        for x in samples:
            sf.write(d / f"{x['id']}.wav", np.clip(x["audio"], -1, 1), sr, subtype="PCM_16")
        (d / "hyps.jsonl").write_text("".join(json.dumps({"id": x["id"], "text": x["text"], "hyp": x["hyp"]}) + "\n"
                                              for x in samples))
    res["utterances"] = float(len(samples))
    return res
