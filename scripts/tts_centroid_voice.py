"""How much of the gap between a tokenizer's per-code reading and its flow decoder is the voice:
``eval-tts-stages``' ``tokens_centroid`` adds the *recording's own* mean log-mel (the held-out
speaker's envelope) to each code's mean log-mel, while the flow decoder renders held-out rows
as a training speaker. This re-reads the per-code stage with that training speaker's mean
log-mel instead (the mean over its utterances in TRAIN), judged the same way.

  python scripts/tts_centroid_voice.py TRAIN.jsonl TEST.jsonl TOKENIZER.pt SPEAKER [--limit 100] [--judge base]

Prints the judge WER / Sub / Ins / Del of both readings (own mean, speaker mean).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="manifest with the speaker's utterances (the TTS training split)")
    p.add_argument("test", help="held-out recordings")
    p.add_argument("tokenizer", help="speech tokenizer file (with a per-code log-mel table if upstream)")
    p.add_argument("speaker", help="training speaker whose mean log-mel replaces the recording's")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--judge", default="base")
    p.add_argument("--max-utts", type=int, default=200, help="speaker utterances averaged")
    a = p.parse_args()
    from speech_rl.data.manifest import read_manifest, utterance_audio
    from speech_rl.evaluate import score
    from speech_rl.judge import WhisperJudge, WhisperNormalizer
    from speech_rl.tts.speech_tokenizer import SpeechTokenizer
    from speech_rl.tts.stages import centroid_spectrum, default_vocoder

    tok = SpeechTokenizer.load(a.tokenizer)
    own = [u for u in read_manifest(a.train)[0] if u.speaker == a.speaker][: a.max_utts]
    if not own:
        raise SystemExit(f"{a.train}: no utterances of speaker {a.speaker!r}")
    spk_mean = torch.stack([tok.mel(torch.from_numpy(utterance_audio(u, 16000))).mean(0) for u in own]).mean(0)
    vocoder, judge, norm = default_vocoder(), WhisperJudge(a.judge), WhisperNormalizer()
    rows = {"own_mean": [], "speaker_mean": []}
    for u in read_manifest(a.test)[0][: a.limit]:
        got = centroid_spectrum(torch.from_numpy(utterance_audio(u, 16000)), tok, vocoder)
        spec, own_mean = got if got is not None else (None, None)
        for name, mean in (("own_mean", own_mean), ("speaker_mean", spk_mean)):
            audio = np.zeros(0) if spec is None else np.clip(vocoder(spec + mean[None]).numpy(), -1, 1)
            rows[name].append({"id": u.id, "ref": u.text, "hyp": judge.transcribe(audio) if len(audio) >= 400 else "",
                               "keywords": None})
    out = {}
    for name, r in rows.items():
        s = score(r, norm)
        out[name] = {k: round(100 * s[k], 2) for k in ("wer", "sub", "ins", "del")}
    print(json.dumps({"tokenizer": a.tokenizer, "speaker": a.speaker, "speaker_utts": len(own),
                      "utterances": len(rows["own_mean"]), **out}))


if __name__ == "__main__":
    main()
