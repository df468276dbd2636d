"""`speech-rl eval-tts-stages`: where a TTS loses what the judge needs, stage by stage.

The recordings of a manifest are re-made through each stage of the TTS output path and
read by the independent judge (Whisper through faster-whisper, Whisper's English
normaliser on both sides); no TTS LM sampling is involved, so every loss measured here is
one the LM cannot make up for:

  recording     the audio as it is: the judge's own floor on these speakers
  mel_vocoder   recording -> log-mel -> the checkpoint's vocoder (Griffin-Lim by default):
                what the vocoder keeps
  tokens_centroid  recording -> speech tokens -> the mean-removed log-mel each token stands
                for (a log-mel tokenizer's k-means centroids; an upstream tokenizer's per-code
                mean log-mel over its fit corpus) + the recording's mean log-mel -> vocoder:
                what the tokens themselves keep, with no decoder trained (the utterance mean,
                which the tokenizer removes, is taken from the recording)
  tokens_prior  recording -> speech tokens -> the flow decoder's mel prior ``mu`` (decoders
                with ``prior_weight > 0``) -> vocoder: the regression path alone, no ODE
  tokens_flow   recording -> speech tokens (the tokenizer the TTS data was made with) ->
                the checkpoint's flow decoder -> vocoder: what the tokens, and the flow
                decoder trained on them, keep

A stage's WER far above the one before it is where intelligibility is lost. The flow
decoder is conditioned on one of its own training speakers (``speaker``; rows of a
held-out speaker need one), so ``tokens_flow`` also shows whether the tokens carry the
content of a voice the TTS never heard.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

STAGES = ("recording", "mel_vocoder", "tokens_centroid", "tokens_prior", "tokens_flow")
DEFAULT_STAGES = ("recording", "mel_vocoder", "tokens_flow")


NO_FLOW = ("recording", "mel_vocoder", "tokens_centroid")     # stages that run without a TTS checkpoint


@functools.lru_cache(maxsize=1)
def default_vocoder():
    """The TTS default vocoder (Griffin-Lim, 32 iterations, 80 mels, hop 160), built once."""
    from speech_rl.tts.vocoder import GriffinLimVocoder

    return GriffinLimVocoder(n_iter=32)


def centroid_spectrum(x: torch.Tensor, tokenizer, vocoder, n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stage ``tokens_centroid`` up to the vocoder: recording (n,) -> tokens -> (the
    mean-removed log-mel they stand for (T * mels_per_token, n_mels), the recording's mean
    log-mel (n_mels,)); None when the recording gives no token. Checks that the tokenizer's
    log-mel is the one ``vocoder`` (reading ``n_mels`` bins) reads."""
    if tokenizer.mel.n_mels != n_mels or tokenizer.mel.hop_length != vocoder.hop_length:
        raise ValueError(f"stage 'tokens_centroid': the tokenizer's log-mel ({tokenizer.mel.n_mels} bins, hop "
                         f"{tokenizer.mel.hop_length}) is not the vocoder's ({n_mels}, {vocoder.hop_length})")
    feats = tokenizer.features(x)                                              # (T', n_mels or D)
    ids = tokenizer.tokens_from_features(feats)
    if not ids.numel():
        return None
    return tokenizer.centroid_features(ids), (feats if tokenizer.ssl is None else tokenizer.mel(x)).mean(0)


def resynthesise(wav: np.ndarray, stage: str, system=None, tokenizer=None, speaker: str | None = None,
                 gen: torch.Generator | None = None, flow_steps: int | None = None,
                 flow_temperature: float | None = None) -> np.ndarray:
    """One recording (n,) float32 at 16 kHz -> its re-synthesis through ``stage`` (same rate).
    Without ``system`` (a TTS system) the vocoder stages use the TTS default, Griffin-Lim
    (32 iterations) on 80-bin log-mel at hop 160. ``flow_steps`` / ``flow_temperature``: Euler
    steps / start-noise scale of tokens_flow (None: the system's own)."""
    if stage == "recording":
        return wav
    if system is None and stage not in NO_FLOW:
        raise ValueError(f"stage {stage!r} needs a TTS checkpoint (its flow decoder)")
    if system is None:
        vocoder, n_mels = default_vocoder(), 80
    else:
        vocoder, n_mels = system.vocoder, system.flow.n_mels
    if vocoder.sample_rate != 16000:
        raise ValueError(f"stage check reads 16 kHz audio; this vocoder writes {vocoder.sample_rate} Hz")
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if stage == "mel_vocoder":
        from speech_rl.data.features import LogMel

        mel = LogMel(n_mels=n_mels, hop_length=vocoder.hop_length)(x)
        return vocoder(mel).numpy()
    if stage == "tokens_centroid":
        if tokenizer is None:
            raise ValueError("stage 'tokens_centroid' needs the speech tokenizer the TTS data was tokenised with")
        spec = centroid_spectrum(x, tokenizer, vocoder, n_mels)
        return np.zeros(0, np.float32) if spec is None else vocoder(spec[0] + spec[1][None]).numpy()
    if stage in ("tokens_flow", "tokens_prior"):
        if tokenizer is None:
            raise ValueError(f"stage {stage!r} needs the speech tokenizer the TTS data was tokenised with")
        toks = tokenizer(x).tolist()
        if not toks:
            return np.zeros(0, np.float32)
        if stage == "tokens_prior":
            spk = system.lm.speaker_ids([speaker], x.device)
            with torch.no_grad():
                mu = system.flow.prior_mel(torch.tensor([toks]), torch.tensor([len(toks)]), spk)
            return system.vocoder(mu[0]).numpy()
        wavs, _, _ = system.synthesise([toks], [speaker], gen=gen, n_steps=flow_steps,
                                      temperature=flow_temperature)
        return wavs[0].numpy()
    raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")


def evaluate_stages(manifest: str | Path, checkpoint: str | None = None, tokenizer: str | None = None,
                    speaker: str | None = None, judge: str = "tiny.en", stages: tuple[str, ...] = DEFAULT_STAGES,
                    limit: int | None = None, wav_dir: str | None = None, seed: int = 0,
                    progress: bool = True, flow_steps: int | None = None,
                    flow_temperature: float | None = None) -> dict:
    """Judge WER / sub / ins / del (Whisper normaliser) of each stage's re-synthesis of the
    first ``limit`` rows of ``manifest``. A row whose speaker the flow decoder knows keeps its
    voice; any other row is decoded as ``speaker`` (required then). ``checkpoint`` (a TTS
    checkpoint) is needed by tokens_prior / tokens_flow; without one, mel_vocoder and
    tokens_centroid use the TTS default vocoder (a tokenizer sweep needs no TTS). Returns
    ``{"stages": {stage: {wer, sub, ins, del}}, "utterances", "judge", ...}``."""
    from speech_rl.data.manifest import read_manifest, utterance_audio
    from speech_rl.evaluate import score
    from speech_rl.judge import WhisperJudge, WhisperNormalizer
    from speech_rl.tts.flow import check_flow_temperature

    if flow_steps is not None and flow_steps < 1:
        raise ValueError(f"flow_steps must be >= 1, got {flow_steps}")
    if flow_temperature is not None:           # refused before the judge loads
        check_flow_temperature(flow_temperature)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown} (known: {', '.join(STAGES)})")
    utts, bad = read_manifest(manifest, on_bad_row="error", check_audio="full")
    utts = utts[:limit] if limit else utts
    system = tok = None
    if checkpoint is not None:
        from speech_rl.tts.system import load_tts_system

        system = load_tts_system(checkpoint).eval()
    elif any(s not in NO_FLOW for s in stages):
        raise ValueError(f"stages {[s for s in stages if s not in NO_FLOW]} need a TTS checkpoint")
    if any(s.startswith("tokens_") for s in stages):
        from speech_rl.tts.speech_tokenizer import SpeechTokenizer

        if tokenizer is None:
            raise ValueError("stages tokens_* need --tokenizer (the file the TTS data was tokenised with)")
        tok = SpeechTokenizer.load(tokenizer)
        if system is not None and tok.codebook_size != system.flow.n_codes:
            raise ValueError(f"tokenizer {tokenizer} has {tok.codebook_size} codes, the flow decoder of "
                             f"{checkpoint} reads {system.flow.n_codes}")
        if "tokens_centroid" in stages and not tok.has_code_mels:
            raise ValueError(f"stage tokens_centroid: tokenizer {tokenizer} reads upstream "
                             f"{tok.upstream_cfg['upstream']!r} and keeps no per-code log-mel (its states are not "
                             "a spectrum; a tokenizer fitted by this version keeps one)")
    if "tokens_prior" in stages and system.flow.prior is None:
        raise ValueError(f"stage tokens_prior: the flow decoder of {checkpoint} has no mel prior (prior_weight 0)")
    if "tokens_flow" in stages or "tokens_prior" in stages:
        known = set(system.speakers)
        if speaker is not None and speaker not in known:
            raise ValueError(f"--speaker {speaker!r} is not in the TTS model's table {system.speakers}")
        if speaker is None and any(u.speaker not in known for u in utts):
            raise ValueError(f"{manifest}: rows of speakers the TTS never heard "
                             f"({sorted({u.speaker for u in utts} - known)}); give --speaker (one of {system.speakers})")
    whisper, norm = WhisperJudge(judge), WhisperNormalizer()
    res: dict = {"manifest": str(manifest), "checkpoint": checkpoint, "tokenizer": tokenizer, "judge": judge,
                 "flow_steps": flow_steps or (system.flow_steps if system is not None else None),
                 "flow_temperature": (flow_temperature if flow_temperature is not None
                                      else (system.flow_temperature if system is not None else None)),
                 "judge_normalizer": "whisper", "utterances": len(utts), "stages": {}}
    if tok is not None:
        res["token_rate_hz"], res["codebook_size"] = tok.frame_rate, tok.codebook_size
    from tqdm.auto import tqdm

    for stage in stages:
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for u in tqdm(utts, desc=f"stage {stage}", unit="utt", disable=not progress):
            spk = u.speaker if system is not None and u.speaker in system.speakers else speaker
            audio = resynthesise(utterance_audio(u, 16000), stage, system, tok, spk, gen, flow_steps,
                                 flow_temperature)
            hyp = whisper.transcribe(np.clip(audio, -1, 1)) if len(audio) >= 400 else ""
            rows.append({"id": u.id, "ref": u.text, "hyp": hyp, "keywords": None, "audio": audio})
        r = score(rows, norm)
        res["stages"][stage] = {k: r[k] for k in ("wer", "sub", "ins", "del")}
        if wav_dir:
            _write(rows, Path(wav_dir) / stage)
    return res


def _write(rows: list[dict], d: Path) -> None:
    import soundfile as sf

    d.mkdir(parents=True, exist_ok=True)
    for r in rows:
        sf.write(d / f"{r['id']}.wav", np.clip(r["audio"], -1, 1), 16000, subtype="PCM_16")
    (d / "hyps.jsonl").write_text("".join(json.dumps({"id": r["id"], "ref": r["ref"], "hyp": r["hyp"]}) + "\n"
                                          for r in rows))


def format_stages(res: dict) -> str:
    """The stage table as markdown."""
    lines = ["| stage | judge WER % | Sub | Ins | Del |", "|---|---|---|---|---|"]
    for stage, r in res["stages"].items():
        lines.append(f"| {stage} | " + " | ".join(f"{100 * r[k]:.2f}" for k in ("wer", "sub", "ins", "del")) + " |")
    return "\n".join(lines)
