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

``--seed 0 1 2`` samples every text once per seed and pools the scores (``per_seed``
keeps each seed's figures).

Wavs go to ``--wav-dir`` when given (to listen to), metrics to ``--save``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.tts.flow import check_flow_temperature


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


def evaluate_tts(checkpoint: str, texts: str, asr: str | None, speaker: str | None = None,
                 reference: str | None = None, mos: bool = False, base_seconds: float | None = None,
                 wav_dir: str | None = None, max_new_tokens: int = 500, temperature: float = 1.0, top_k: int = 0,
                 seed: int | Sequence[int] = 0, judge: str | None = None,
                 flow_temperature: float | None = None) -> dict:
    """Synthesise every text once per sampling seed and score all samples together.

    Two recognisers can read the samples: ``judge`` (a Whisper model for
    ``speech_rl.judge.WhisperJudge``, an ASR nobody here trained; scored through Whisper's
    English normaliser) gives ``judge_wer`` / ``judge_sub`` / ``judge_ins`` / ``judge_del``,
    the headline of ``speech-rl report --tts``; ``asr`` (a speech-rl ASR checkpoint, the
    project's own recogniser) gives ``wer`` / ``sub`` / ``ins`` / ``del``. At least one.

    TTS decoding samples, so one seed's WER moves by a point or two on a hundred texts
    (README, TTS); several seeds measure the checkpoint instead of one draw. With seeds
    S the metrics pool the S x len(texts) samples (every seed has the same references,
    so the pooled WER is the mean of the seeds' WERs), ``per_seed`` lists each seed's
    wer / sub / ins / del / seconds (/ speaker_sim / mos), and ``wer_seed_std`` their
    spread. A seed's samples do not depend on the other seeds given: ``--seed 1`` alone
    gives the same numbers as the seed-1 entry of ``--seed 0 1 2``. ``flow_temperature``: the
    flow decoder's start-noise scale (default the checkpoint's ``model.flow_temperature``),
    recorded in the result either way."""
    from speech_rl.evaluate import score
    from speech_rl.tts.system import load_tts_system

    seeds = [seed] if isinstance(seed, int) else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if asr is None and judge is None:
        raise ValueError("eval-tts needs a recogniser: --judge whisper and / or --asr CHECKPOINT")
    if flow_temperature is not None:
        flow_temperature = check_flow_temperature(flow_temperature)
    system = load_tts_system(checkpoint)
    if flow_temperature is not None:
        system.flow_temperature = flow_temperature
    rows = read_texts(texts, speaker)
    unknown = sorted({r["speaker"] for r in rows} - set(system.speakers))
    if unknown:
        raise ValueError(f"speakers {unknown} are not in the TTS model's table {system.speakers}")
    sr = system.vocoder.sample_rate
    readers = _recognisers(asr, judge, sr)
    samples, per_seed = [], []
    for s in seeds:
        batch = synthesise_texts(system, rows, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                              top_k=top_k), seed=s)
        entry = {"seed": s}
        for prefix, (read, normalizer) in readers.items():
            for x, h in zip(batch, read([x["audio"] for x in batch])):
                x[prefix + "hyp"] = h
            r = score([{"ref": x["text"], "hyp": x[prefix + "hyp"], "keywords": None} for x in batch], normalizer)
            entry.update({prefix + k: r[k] for k in ("wer", "sub", "ins", "del")})
        for x in batch:
            x["seed"] = s
        per_seed.append({**entry, "seconds": float(np.mean([len(x["audio"]) / sr for x in batch]))})
        samples += batch
    res = {}
    for prefix, (_, normalizer) in readers.items():
        r = score([{"ref": x["text"], "hyp": x[prefix + "hyp"], "keywords": None} for x in samples], normalizer)
        res.update({prefix + k: r[k] for k in ("wer", "sub", "ins", "del")})
    if judge is not None:
        res.update(judge=judge, judge_normalizer="whisper")
    res["seconds"] = float(np.mean([len(x["audio"]) / sr for x in samples]))
    res["finished"] = float(np.mean([x["finished"] for x in samples]))
    if base_seconds:
        res["duration_ratio"] = res["seconds"] / base_seconds
    audio, rates, spk = [x["audio"] for x in samples], [sr] * len(samples), [x["speaker"] for x in samples]
    if reference:
        from rewards.tts import SpeakerSimReward

        res["speaker_sim"] = _pooled(SpeakerSimReward(reference)(audio=audio, sample_rate=rates, speaker=spk),
                                     per_seed, "speaker_sim")
    if mos:
        from rewards.tts import DNSMOSReward

        res["mos"] = _pooled(DNSMOSReward()(audio=audio, sample_rate=rates), per_seed, "mos")
    if wav_dir:
        _write_wavs(samples, sr, Path(wav_dir), by_seed=len(seeds) > 1)
    res["utterances"] = float(len(rows))
    res["seeds"] = seeds
    res["flow_temperature"] = system.flow_temperature
    if len(seeds) > 1:
        res["per_seed"] = per_seed
        for prefix in readers:
            res[prefix + "wer_seed_std"] = float(np.std([p[prefix + "wer"] for p in per_seed], ddof=1))
    return res


def _recognisers(asr: str | None, judge: str | None, sr: int) -> dict:
    """{key prefix: (audio list -> hypotheses, text normaliser)}: "" for the speech-rl ASR
    checkpoint ``asr``, "judge_" for the Whisper ``judge`` (16 kHz; clips shorter than 25 ms
    read as empty)."""
    from speech_rl.evaluate import load_policy

    out = {}
    if judge is not None:
        import soxr

        from speech_rl.judge import WhisperJudge, WhisperNormalizer

        whisper = WhisperJudge(judge)

        def read_judge(audio: list[np.ndarray]) -> list[str]:
            wavs = [a if sr == 16000 else soxr.resample(a, sr, 16000) for a in audio]
            return [whisper.transcribe(np.clip(w, -1, 1)) if len(w) >= 400 else "" for w in wavs]

        out["judge_"] = (read_judge, WhisperNormalizer())
    if asr is not None:
        recogniser = load_policy(asr)
        eng = TorchEngine(recogniser.llm, recogniser.tokenizer.eos_id, recogniser.tokenizer.pad_id)

        def read_asr(audio: list[np.ndarray]) -> list[str]:
            return recogniser.transcribe_waveforms([torch.from_numpy(a) for a in audio], eng, sample_rate=sr)

        out[""] = (read_asr, None)
    return out


def _pooled(values: list[float], per_seed: list[dict], key: str) -> float:
    """Mean of per-sample ``values`` (seed-major, len(per_seed) equal blocks); writes each
    seed's block mean into ``per_seed[i][key]``."""
    blocks = np.array_split(np.asarray(values, dtype=np.float64), len(per_seed))
    for p, b in zip(per_seed, blocks):
        p[key] = float(b.mean())
    return float(np.mean(values))


def _write_wavs(samples: list[dict], sr: int, root: Path, by_seed: bool) -> None:
    """wavs as ``<id>.wav`` plus ``hyps.jsonl``; with several seeds one ``seed<S>/`` folder each."""
    import soundfile as sf

    groups: dict[Path, list[dict]] = {}
    for x in samples:
        groups.setdefault(root / f"seed{x['seed']}" if by_seed else root, []).append(x)
    for d, xs in groups.items():
        d.mkdir(parents=True, exist_ok=True)
        for x in xs:
            sf.write(d / f"{x['id']}.wav", np.clip(x["audio"], -1, 1), sr, subtype="PCM_16")
        (d / "hyps.jsonl").write_text("".join(json.dumps({"id": x["id"], "text": x["text"],
                                                          **{k: x[k] for k in ("hyp", "judge_hyp") if k in x}}) + "\n"
                                              for x in xs))
