"""Speech tokenizer: audio -> discrete acoustic tokens at a fixed frame rate.

Log-mel frames (100 Hz), the hidden states of the pretrained Whisper encoder
(``upstream="whisper"``: 50 Hz; ``upstream_path`` a CTranslate2 Whisper folder or
``pkg:...`` folder, default tiny.en of extra ``whisper``; ``upstream_layer`` k > 0 stops after
encoder layer k, -1 runs all of them and the final norm), or the hidden states of an s3prl
upstream (``"fbank"``, ``"wavlm_local"`` with ``upstream_path``, ...: HuBERT-style units;
extra ``ssl``), are normalised per utterance (mean removed, which takes away much of the channel and some of
the speaker colour), stacked ``stack`` at a time (log-mel: 4 -> 25 Hz) and assigned to the
nearest of ``K`` k-means centroids. The centroids are fitted
on a corpus by ``fit`` (k-means++ initialisation, Lloyd iterations, seeded). For an upstream
tokenizer ``fit`` also keeps each code's mean (mean-removed) log-mel over the fit corpus, so
that the tokens of any tokenizer can be turned back into a spectrum with no decoder trained
(``centroid_features``; a log-mel tokenizer's centroids are that spectrum already).

k-means is written in torch here (about 30 lines): it runs on the features' device and
keeps scikit-learn out of the dependencies for one algorithm.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speech_rl.data.features import LogMel


def kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding. x (N, D) -> centroids (k, D)."""
    n = x.shape[0]
    idx = [int(torch.randint(n, (1,), generator=gen))]
    d2 = ((x - x[idx[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        i = int(torch.multinomial(p, 1, generator=gen))
        idx.append(i)
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(-1))
    return x[idx].clone()


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid. x (N, D), centroids (K, D) -> (ids (N,) long, squared distances (N,))."""
    ids, dist = [], []
    c2 = (centroids ** 2).sum(-1)
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        d = (xb ** 2).sum(-1, keepdim=True) - 2 * xb @ centroids.T + c2       # (n, K)
        m, i = d.min(-1)
        ids.append(i)
        dist.append(m.clamp_min(0))
    return torch.cat(ids), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0, tol: float = 1e-4) -> tuple[torch.Tensor, float]:
    """Lloyd's k-means. x (N, D) float -> (centroids (k, D), mean squared distance).

    An empty cluster is re-seeded with the point farthest from its centroid, so all k
    centroids stay in use."""
    if x.dim() != 2 or x.shape[0] < k:
        raise ValueError(f"kmeans needs (N, D) with N >= k={k}, got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    c = kmeans_pp_init(x, k, gen)
    prev = float("inf")
    for _ in range(iters):
        ids, d = assign(x, c)
        sums = torch.zeros_like(c).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k).to(x.dtype)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = int(d.argmax())
            c[j], d[far] = x[far], 0.0
        inertia = float(d.mean())
        if prev - inertia <= tol * max(prev, 1e-12):
            break
        prev = inertia
    return c, float(assign(x, c)[1].mean())


def whisper_states(path: str | None = None, layer: int = -1) -> nn.Module:
    """The frozen, trimmed-window Whisper encoder (``WhisperAudioEncoder``) of CTranslate2
    folder ``path`` (default: the judge's tiny.en), cut after encoder layer ``layer`` (1..N;
    -1: all layers and the final layer norm). forward: mel (B, T, n_mels), lengths (B,) ->
    (B, ceil(T / 2), D), lengths."""
    from speech_rl.judge import DEFAULT_MODEL
    from speech_rl.models.encoder import WhisperAudioEncoder

    enc = WhisperAudioEncoder(ct2_path=path or DEFAULT_MODEL, window="trim", freeze=True)
    n = len(enc.enc.layers)
    if layer != -1:
        if not 1 <= layer <= n:
            raise ValueError(f"upstream_layer {layer}: this Whisper encoder has layers 1..{n} (or -1: all)")
        enc.enc.layers = enc.enc.layers[:layer]
        enc.enc.layer_norm = nn.Identity()
    return enc.eval()


class SpeechTokenizer(nn.Module):
    """waveform (n,) at ``sample_rate`` -> token ids (T,) long at ``frame_rate`` Hz,
    ``T = (n // hop + 1) // stack`` (a last partial stack is dropped; with an s3prl
    ``upstream``, hop is its downsampling rate, e.g. 320 samples for WavLM).

    >>> tok = SpeechTokenizer(codebook_size=4)
    >>> tok.frame_rate
    25.0
    """

    def __init__(self, codebook_size: int = 256, stack: int = 4, sample_rate: int = 16000, n_mels: int = 80,
                 hop_length: int = 160, upstream: str | None = None, upstream_path: str | None = None,
                 upstream_layer: int = -1):
        super().__init__()
        self.codebook_size, self.stack, self.sample_rate = codebook_size, stack, sample_rate
        self.mel = LogMel(sample_rate=sample_rate, hop_length=hop_length, n_mels=n_mels)
        self.upstream_cfg = {"upstream": upstream, "upstream_path": upstream_path, "upstream_layer": upstream_layer}
        self.ssl = None
        dim, self.hop = n_mels, hop_length
        if upstream and sample_rate != 16000:
            raise ValueError(f"pretrained upstreams read 16 kHz audio, not {sample_rate}")
        if upstream == "whisper":
            self.ssl = whisper_states(upstream_path, upstream_layer)
            if n_mels != self.ssl.n_mels or hop_length != 160:
                raise ValueError(f"upstream whisper reads {self.ssl.n_mels} mels at hop 160, not {n_mels} at {hop_length}")
            dim, self.hop = self.ssl.d_model, 2 * hop_length
        elif upstream:
            from speech_rl.models.s3prl_encoder import S3PRLEncoder

            self.ssl = S3PRLEncoder(upstream, path=upstream_path, layer=upstream_layer).eval()
            dim, self.hop = self.ssl.d_model, self.ssl.downsample_rate
        self.register_buffer("centroids", torch.zeros(codebook_size, stack * dim))
        self.register_buffer("fitted", torch.tensor(False))
        # upstream tokenizers: each code's mean log-mel, (K, mel frames a token * n_mels)
        self.register_buffer("code_mels", torch.zeros(codebook_size, self.mels_per_token * n_mels if self.ssl is not None
                                                      else 0))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop / self.stack

    @property
    def mels_per_token(self) -> int:
        """Log-mel frames (hop ``mel.hop_length``) one token spans: ``stack`` for log-mel
        tokens, 2 * ``stack`` for Whisper states (50 Hz)."""
        return self.stack * self.hop // self.mel.hop_length

    @torch.no_grad()
    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """waveform (n,) -> log-mel (T, n_mels) or the upstream's hidden states (T, D)."""
        if wav.dim() != 1 or wav.numel() < self.mel.n_fft:
            raise ValueError(f"SpeechTokenizer wants a mono waveform of >= {self.mel.n_fft} samples, "
                             f"got shape {tuple(wav.shape)}")
        if self.ssl is None:
            return self.mel(wav.float())
        if self.upstream_cfg["upstream"] == "whisper":
            mel = self.mel(wav.float())                                                 # (Tm, n_mels)
            h, _ = self.ssl(mel[None], torch.tensor([mel.shape[0]]))
            return h[0, : mel.shape[0] // 2]        # whole mel frame pairs: tokens * 2 <= mel frames
        h, n = self.ssl(wav.float().reshape(1, -1, 1), torch.tensor([wav.numel()]))
        return h[0, : int(n[0])]

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """waveform (n,) -> stacked, mean-normalised features (T, stack * D)."""
        return self.stack_features(self.features(wav))

    def stack_features(self, m: torch.Tensor) -> torch.Tensor:
        """features (T', D) from ``features`` -> stacked, mean-normalised (T' // stack, stack * D)."""
        m = m - m.mean(0, keepdim=True)
        t = m.shape[0] // self.stack
        return m[: t * self.stack].reshape(t, -1)

    def fit(self, wavs: list[torch.Tensor], iters: int = 30, seed: int = 0, max_frames: int = 200_000) -> float:
        """Fit the codebook on waveforms; returns the final mean squared distance.
        At most ``max_frames`` stacked frames (a seeded random subset) are clustered."""
        frames = [self.frames(w) for w in wavs]
        x = torch.cat(frames)
        if x.shape[0] > max_frames:
            x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]]
        c, inertia = kmeans(x, self.codebook_size, iters=iters, seed=seed)
        self.centroids.copy_(c)
        self.fitted.fill_(True)
        if self.ssl is not None:
            self.code_mels.copy_(self.mean_mels(wavs, [assign(f, c)[0] for f in frames]))
        return inertia

    @torch.no_grad()
    def mean_mels(self, wavs: list[torch.Tensor], ids: list[torch.Tensor]) -> torch.Tensor:
        """Each code's mean mean-removed log-mel over waveforms and their token ids:
        wavs [(n,)], ids [(T,)] -> (K, mels_per_token * n_mels); a code never seen stays 0
        (the utterance mean)."""
        p, k = self.mels_per_token, self.codebook_size
        sums, counts = torch.zeros(k, p * self.mel.n_mels), torch.zeros(k)
        for w, i in zip(wavs, ids):
            m = self.mel(w.float())
            m = m - m.mean(0, keepdim=True)
            t = min(i.numel(), m.shape[0] // p)
            sums.index_add_(0, i[:t], m[: t * p].reshape(t, -1))
            counts += torch.bincount(i[:t], minlength=k)
        return sums / counts.clamp_min(1)[:, None]

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.tokens_from_features(self.features(wav))

    @torch.no_grad()
    def tokens_from_features(self, m: torch.Tensor) -> torch.Tensor:
        """features (T', D) from ``features`` -> token ids (T' // stack,) long (for a caller
        that needs the features too, without computing them twice)."""
        if not bool(self.fitted):
            raise RuntimeError("SpeechTokenizer has no codebook yet: call fit(...) or load(...) first")
        return assign(self.stack_features(m), self.centroids)[0]

    def centroid_features(self, ids: torch.Tensor) -> torch.Tensor:
        """token ids (T,) -> the mean-removed log-mel they stand for, (T * mels_per_token,
        n_mels): a log-mel tokenizer's centroids unstacked, an upstream tokenizer's per-code
        mean log-mel (kept by ``fit``). ``speech-rl eval-tts-stages``' ``tokens_centroid``
        stage: the tokens' own reach with no decoder trained."""
        if ids.dim() != 1:
            raise ValueError(f"centroid_features wants token ids (T,), got shape {tuple(ids.shape)}")
        if not self.has_code_mels:
            raise ValueError(f"this {self.upstream_cfg['upstream']!r} tokenizer has no per-code log-mel "
                             "(its states are not a spectrum; fit it again, which keeps one)")
        table = self.centroids if self.ssl is None else self.code_mels
        return table[ids].reshape(ids.numel() * self.mels_per_token, -1)

    @property
    def has_code_mels(self) -> bool:
        """Whether ``centroid_features`` can give a spectrum: always for log-mel tokens; for an
        upstream, when the file was fitted with its per-code log-mel table."""
        return self.ssl is None or bool(self.code_mels.any())

    def config(self) -> dict:
        return {"codebook_size": self.codebook_size, "stack": self.stack, "sample_rate": self.sample_rate,
                "n_mels": self.mel.n_mels, "hop_length": self.mel.hop_length, **self.upstream_cfg}

    def save(self, path: str | Path) -> None:
        from speech_rl.checkpoint import atomic_torch_save

        # the codebook only: an s3prl upstream's weights come back from its own checkpoint
        atomic_torch_save({"config": self.config(), "state_dict": {"centroids": self.centroids, "fitted": self.fitted,
                                                                   "code_mels": self.code_mels}}, path)

    @classmethod
    def load(cls, path: str | Path) -> "SpeechTokenizer":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"speech tokenizer {p} does not exist (fit one with `speech-rl data tokenize --fit`)")
        blob = torch.load(p, map_location="cpu", weights_only=True)
        tok = cls(**blob["config"])
        sd = blob["state_dict"]
        if tuple(sd["centroids"].shape) != tuple(tok.centroids.shape):
            raise ValueError(f"speech tokenizer {p}: codebook {tuple(sd['centroids'].shape)} does not fit its "
                             f"features {tuple(tok.centroids.shape)}")
        tok.centroids.copy_(sd["centroids"])
        tok.fitted.fill_(bool(sd["fitted"]))
        if "code_mels" in sd and tuple(sd["code_mels"].shape) == tuple(tok.code_mels.shape):
            tok.code_mels.copy_(sd["code_mels"])       # files from before the mel table load without it
        return tok
