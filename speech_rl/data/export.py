"""Writing utterances back into other toolchains' layouts: a Kaldi data directory and a Lhotse
cut set (``speech-rl data export``)."""
from __future__ import annotations

from pathlib import Path

from speech_rl.data.formats import SourceError, require_lhotse


def export_kaldi(utts, out_dir: str | Path) -> Path:
    """Write utterances as a Kaldi data directory: ``wav.scp`` (recording -> absolute path),
    ``text``, ``utt2spk`` / ``spk2utt`` (the utterance id as speaker where none is known),
    ``utt2dur``, and ``segments`` when any utterance is a span of its recording. Sorted by
    id, as Kaldi's ``utils/validate_data_dir.sh`` wants. Audio inside a dataset cannot be
    named by wav.scp: convert it to JSONL (which writes it to files) first."""
    from speech_rl.atomic import atomic_open

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    for u in utts:
        if not isinstance(u.audio, Path):
            raise SourceError(f"utterance {u.id!r}: its audio is inside a dataset ({u.audio}); "
                              "run `speech-rl data convert` to JSONL first, which writes it to files")
        if any(c.isspace() for c in u.id + (u.speaker or "")):
            raise SourceError(f"utterance {u.id!r}: Kaldi ids and speakers cannot hold whitespace")
    spans = any(u.offset is not None or u.channel is not None for u in utts)
    recordings: dict[Path, str] = {}
    for u in utts:
        recordings.setdefault(u.audio, f"rec_{len(recordings):07d}" if spans else u.id)
    spk = {u.id: (u.speaker or u.id) for u in utts}
    tables = {
        "wav.scp": sorted(f"{rid} {path}" for path, rid in recordings.items()),
        "text": [f"{u.id} {' '.join(u.text.split())}" for u in utts],
        "utt2spk": [f"{u.id} {spk[u.id]}" for u in utts],
        "utt2dur": [f"{u.id} {u.duration:.3f}" for u in utts],
    }
    by_spk: dict[str, list[str]] = {}
    for uid, s in sorted(spk.items(), key=lambda kv: (kv[1], kv[0])):
        by_spk.setdefault(s, []).append(uid)
    tables["spk2utt"] = [f"{s} {' '.join(ids)}" for s, ids in sorted(by_spk.items())]
    if spans:
        if any(u.channel is not None for u in utts):
            raise SourceError("a channel of a multi-channel recording cannot be written to wav.scp as a "
                              "plain path; export the channel to files first")
        tables["segments"] = [f"{u.id} {recordings[u.audio]} {u.offset or 0.0:.4f} "
                              f"{(u.offset or 0.0) + u.duration:.4f}" for u in utts]
    for name, lines in tables.items():
        with atomic_open(out / name) as f:
            f.write("".join(line + "\n" for line in lines))
    return out


def export_lhotse(utts, out_path: str | Path) -> Path:
    """Write utterances as a Lhotse cut set (``*.jsonl.gz``), built with lhotse itself: one
    ``Recording`` per audio file (read from its header), one ``MonoCut`` with one
    ``SupervisionSegment`` per utterance (keywords in the supervision's ``custom``)."""
    lhotse = require_lhotse()
    out = Path(out_path)
    if not out.name.endswith(".jsonl.gz"):
        raise SourceError(f"Lhotse cut set {out}: name it *.jsonl.gz")
    recordings = {}
    cuts = []
    for u in sorted(utts, key=lambda u: u.id):
        if not isinstance(u.audio, Path):
            raise SourceError(f"utterance {u.id!r}: its audio is inside a dataset ({u.audio}); "
                              "run `speech-rl data convert` to JSONL first")
        if u.audio not in recordings:
            recordings[u.audio] = lhotse.Recording.from_file(u.audio, recording_id=f"rec_{len(recordings):07d}")
        rec = recordings[u.audio]
        start = u.offset or 0.0
        channel = u.channel if u.channel is not None else 0
        sup = lhotse.SupervisionSegment(id=u.id, recording_id=rec.id, start=0.0, duration=u.duration,
                                        channel=channel, text=u.text, speaker=u.speaker,
                                        custom={"keywords": list(u.keywords)} if u.keywords is not None else None)
        cuts.append(lhotse.MonoCut(id=u.id, start=start, duration=u.duration, channel=channel, recording=rec,
                                   supervisions=[sup]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name[: -len(".jsonl.gz")] + ".tmp.jsonl.gz")
    lhotse.CutSet.from_cuts(cuts).to_file(tmp)
    tmp.replace(out)
    return out
