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


class PerSetErrorRates(torch.nn.Module):
    """One ``ASRErrorRates`` per validation set, for a module validated on several
    sets at once (Lightning numbers them by ``dataloader_idx``; ``names`` gives each its
    log prefix, e.g. ``["val", "val_long"]``). A set's metric is made on first use.

    >>> m = PerSetErrorRates()
    >>> m.get(1).update(["a b"], ["a"]); m.get(0).update(["a b"], ["a b"])
    >>> {k: round(v, 2) for k, v in m.compute_and_reset(["val", "val_long"]).items() if k.endswith("wer")}
    {'val/wer': 0.0, 'val_long/wer': 0.5}
    """

    def __init__(self, normalizer: TextNormalizer | None = None):
        super().__init__()
        self.normalizer = normalizer or TextNormalizer()
        self.sets = torch.nn.ModuleList()

    def get(self, idx: int, device: torch.device | str | None = None) -> ASRErrorRates:
        while len(self.sets) <= idx:
            self.sets.append(ASRErrorRates(self.normalizer).to(device or "cpu"))
        return self.sets[idx]

    def compute_and_reset(self, names: list[str]) -> dict[str, float]:
        """``{"<name>/<rate>": value}`` over the sets updated since the last reset."""
        out: dict[str, float] = {}
        for idx, m in enumerate(self.sets):
            if not m.update_called:
                continue
            if idx >= len(names):
                raise ValueError(f"validation set {idx} has no name; names: {names}")
            out.update({f"{names[idx]}/{k}": float(v) for k, v in m.compute().items()})
            m.reset()
        return out


def val_set_names(trainer) -> list[str]:
    """Log prefixes of the validation sets: the datamodule's ``val_names`` (e.g.
    ``["val", "val_long"]``), or ``["val"]`` when it names none."""
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    return list(getattr(dm, "val_names", None) or ["val"])
