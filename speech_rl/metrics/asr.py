"""Corpus-level ASR error rates as a torchmetrics Metric (sums sync across processes)."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from speech_rl.metrics.text import TextNormalizer, keyword_counts, word_errors


class ASRErrorRates(Metric):
    """Accumulates S/D/I over a corpus; ``compute`` gives rates relative to the
    number of reference words (``wer = sub + del + ins``), plus keyword recall over
    the utterances that list keywords.

    >>> m = ASRErrorRates()
    >>> m.update(["a b c"], ["a x c d"], [None]); {k: round(v.item(), 4) for k, v in m.compute().items()}
    {'wer': 0.6667, 'sub': 0.3333, 'del': 0.0, 'ins': 0.3333, 'keyword_recall': nan}
    """

    full_state_update = False

    def __init__(self, normalizer: TextNormalizer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.normalizer = normalizer or TextNormalizer()
        for name in ("sub", "dele", "ins", "n_ref", "kw_hit", "kw_total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, refs: list[str], hyps: list[str], keywords: list[list[str] | None] | None = None) -> None:
        if len(refs) != len(hyps):
            raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
        keywords = keywords or [None] * len(refs)
        for ref, hyp, kws in zip(refs, hyps, keywords):
            r, h = self.normalizer(ref), self.normalizer(hyp)
            e = word_errors(r, h)
            self.sub += e.sub
            self.dele += e.dele
            self.ins += e.ins
            self.n_ref += e.n_ref
            if kws:
                kn = [self.normalizer(k) for k in kws]
                ref_c, hyp_c = keyword_counts(r, kn), keyword_counts(h, kn)
                self.kw_hit += sum(min(a, b) for a, b in zip(ref_c, hyp_c))
                self.kw_total += sum(ref_c)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n_ref.clamp(min=1).double()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {
            "wer": (self.sub + self.dele + self.ins) / n,
            "sub": self.sub / n,
            "del": self.dele / n,
            "ins": self.ins / n,
            "keyword_recall": self.kw_hit / self.kw_total.double() if self.kw_total > 0 else nan,
        }
