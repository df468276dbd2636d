"""TTS data: manifest + acoustic tokens -> (text, speaker, tokens, log-mel) batches.

Tokens come from ``<manifest stem>.tokens.jsonl`` beside each manifest (``speech-rl data
tokenize``). With ``tokenizer`` set, ``prepare_data`` writes missing token files itself
(fitting and saving the tokenizer first if its file does not exist): the embedded
default goes synth -> tokenize -> train with no manual step.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.asr import ASRDataModule
from speech_rl.data.features import LogMel, pad_features
from speech_rl.data.manifest import Utterance, utterance_audio

log = logging.getLogger(__name__)


@dataclass
class TTSBatch:
    """A batch of B utterances."""

    texts: list[str]
    speakers: list[str]
    tokens: torch.Tensor            # (B, T) long, padded with 0 (see token_lens)
    token_lens: torch.Tensor        # (B,) long
    mel: torch.Tensor               # (B, Tm, n_mels) float, Tm >= up * T, zero padded
    mel_lens: torch.Tensor          # (B,) long
    ids: list[str]
    durations: list[float]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device) -> "TTSBatch":
        return TTSBatch(self.texts, self.speakers, self.tokens.to(device), self.token_lens.to(device),
                        self.mel.to(device), self.mel_lens.to(device), self.ids, self.durations)


class TTSDataset(Dataset):
    """Utterances with their acoustic tokens (id -> list[int]) and log-mel (T, n_mels)."""

    def __init__(self, utterances: list[Utterance], tokens: dict[str, list[int]], sample_rate: int = 16000,
                 n_mels: int = 80, default_speaker: str | None = None):
        missing = [u.id for u in utterances if u.id not in tokens]
        if missing:
            raise ValueError(f"{len(missing)} utterances have no acoustic tokens (e.g. {missing[:3]}): "
                             "re-run `speech-rl data tokenize` on their manifest")
        nospk = [u.id for u in utterances if not u.speaker] if default_speaker is None else []
        if nospk:
            raise ValueError(f"{len(nospk)} utterances have no 'speaker' (e.g. {nospk[:3]}); TTS needs one "
                             "(or set data.default_speaker)")
        self.utts, self.tokens, self.default_speaker = utterances, tokens, default_speaker
        self.sample_rate = sample_rate
        self.logmel = LogMel(sample_rate=sample_rate, n_mels=n_mels)

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict:
        u = self.utts[i]
        mel = self.logmel(torch.from_numpy(utterance_audio(u, self.sample_rate)))
        return {"id": u.id, "text": u.text, "speaker": u.speaker or self.default_speaker,
                "tokens": torch.tensor(self.tokens[u.id], dtype=torch.long), "mel": mel, "duration": u.duration}


def collate_tts(items: list[dict]) -> TTSBatch:
    toks = torch.nn.utils.rnn.pad_sequence([it["tokens"] for it in items], batch_first=True)
    mel, mel_lens = pad_features([it["mel"] for it in items])
    return TTSBatch([it["text"] for it in items], [it["speaker"] for it in items], toks,
                    torch.tensor([len(it["tokens"]) for it in items]), mel, mel_lens,
                    [it["id"] for it in items], [it["duration"] for it in items])


class TTSDataModule(ASRDataModule):
    """``ASRDataModule`` (manifests, union of train manifests, bad rows, buckets, resumable
    order, ``synth``) with acoustic tokens and speakers.

    Extra args: tokenizer (path of a ``SpeechTokenizer`` file: read, or fitted on the
    first train manifest and saved there when missing), codebook_size (when fitting),
    default_speaker (for manifests without ``speaker``)."""

    def __init__(self, *args, tokenizer: str | None = None, codebook_size: int = 256,
                 default_speaker: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hparams.update(tokenizer=tokenizer, codebook_size=codebook_size, default_speaker=default_speaker)

    def _manifests(self) -> list[str]:
        h = self.hparams
        train = [h.train_manifest] if isinstance(h.train_manifest, str) else list(h.train_manifest)
        return train + ([h.val_manifest] if h.val_manifest else [])

    def prepare_data(self) -> None:
        super().prepare_data()
        h = self.hparams
        if not h.tokenizer:
            return
        from speech_rl.tts.speech_tokenizer import SpeechTokenizer
        from speech_rl.tts.tokenize import fit_tokenizer, tokenize_manifest, tokens_path

        todo = [m for m in self._manifests() if not tokens_path(m).exists()]
        if not todo:
            return
        if Path(h.tokenizer).exists():
            tok = SpeechTokenizer.load(h.tokenizer)
        else:
            tok, _ = fit_tokenizer([self._manifests()[0]], codebook_size=h.codebook_size, seed=h.seed)
            tok.save(h.tokenizer)
            log.info("speech tokenizer fitted and saved to %s", h.tokenizer)
        for m in todo:
            log.info("acoustic tokens: %s", tokenize_manifest(m, tok))

    def make_dataset(self, utts: list[Utterance], paths: str | list[str]) -> TTSDataset:
        from speech_rl.tts.tokenize import read_tokens, tokens_path

        tokens: dict[str, list[int]] = {}
        for p in [paths] if isinstance(paths, str) else list(paths):
            part = read_tokens(tokens_path(p))
            top = max((max(t) for t in part.values() if t), default=-1)
            if top >= self.hparams.codebook_size:
                raise ValueError(f"{tokens_path(p)} holds token id {top} but data.codebook_size is "
                                 f"{self.hparams.codebook_size}: written by another tokenizer? (delete it to re-tokenise)")
            tokens.update(part)
        return TTSDataset(utts, tokens, self.hparams.sample_rate, self.hparams.n_mels, self.hparams.default_speaker)

    collate = staticmethod(collate_tts)
