"""TTS LM: text -> discrete acoustic tokens, CosyVoice2's layout on an HF causal LM.

The sequence is ``[spk | text tokens | sos | speech tokens | eos]``. The prompt part
(speaker, text, sos) enters as embeddings from tables of its own; the causal LM's own
vocabulary is the speech codebook plus ``eos``,
so its output head can only emit speech tokens or stop, and the rollout engines run
it exactly like the ASR LLM (prompt embeddings in, token ids out). The vocabulary is
the K codes plus ``eos`` (id ``K``), which also pads: a pad id of its own would be a
token the head could sample.
"""
from __future__ import annotations

import torch
from torch import nn

from speech_rl.models.llm import build_causal_lm, response_logprobs


class TTSLM(nn.Module):
    """Args: text_tokenizer (``encode``, ``vocab_size``), n_codes (K, speech codebook
    size), speakers (names; index = speaker id), llm (``build_causal_lm`` kwargs)."""

    def __init__(self, text_tokenizer, n_codes: int, speakers: list[str], llm: dict):
        super().__init__()
        if n_codes < 2 or not speakers:
            raise ValueError(f"TTSLM needs n_codes >= 2 and at least one speaker, got {n_codes}, {speakers!r}")
        self.tokenizer, self.n_codes, self.speakers = text_tokenizer, n_codes, list(speakers)
        self.eos_id = self.pad_id = n_codes
        self.llm = build_causal_lm(vocab_size=n_codes + 1, **llm)
        h = self.llm.get_input_embeddings().embedding_dim
        self.text_embed = nn.Embedding(text_tokenizer.vocab_size, h)
        self.spk_embed = nn.Embedding(len(self.speakers), h)
        self.sos = nn.Parameter(torch.randn(h) * 0.02)
        self._spk_index = {s: i for i, s in enumerate(self.speakers)}

    def speaker_ids(self, speakers: list[str], device=None) -> torch.Tensor:
        """Speaker names -> (B,) long; an unknown name raises, listing the known ones."""
        try:
            return torch.tensor([self._spk_index[s] for s in speakers], dtype=torch.long, device=device)
        except KeyError as exc:
            raise ValueError(f"unknown speaker {exc.args[0]!r}; this TTS LM knows {self.speakers}") from exc

    def prompt_embeds(self, texts: list[str], speakers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> left-padded ``[spk | text | sos]`` embeddings (B, Lp, H) and mask (B, Lp) long."""
        if len(texts) != len(speakers):
            raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
        dev = self.sos.device
        spk = self.spk_embed(self.speaker_ids(speakers, dev))                          # (B, H)
        seqs = []
        for i, t in enumerate(texts):
            ids = self.tokenizer.encode(t)
            if not ids:
                raise ValueError(f"empty text for TTS (row {i})")
            seqs.append(torch.cat([spk[i:i + 1], self.text_embed(torch.tensor(ids, device=dev)), self.sos[None]]))
        lp = max(s.shape[0] for s in seqs)
        out = self.sos.new_zeros(len(seqs), lp, self.sos.shape[0])
        mask = torch.zeros(len(seqs), lp, dtype=torch.long, device=dev)
        for i, s in enumerate(seqs):
            out[i, lp - s.shape[0]:] = s
            mask[i, lp - s.shape[0]:] = 1
        return out, mask

    def target_ids(self, token_lists: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Speech tokens -> padded ``tokens + [eos]`` (N, T) long and mask (N, T) float."""
        seqs = [list(t) + [self.eos_id] for t in token_lists]
        if any(not 0 <= x < self.n_codes for s in token_lists for x in s):
            raise ValueError(f"speech tokens must lie in [0, {self.n_codes}) for this TTS LM")
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(seqs), t, dtype=torch.float32, device=device)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, device=device)
            mask[i, : len(s)] = 1
        return ids, mask

    def forward(self, texts: list[str], speakers: list[str], resp_ids: torch.Tensor | None = None,
                resp_mask: torch.Tensor | None = None, group_size: int = 1, temperature: float = 1.0,
                with_entropy: bool = False):
        """Without ``resp_ids``: prompt embeds (B, Lp, H) and mask. With ``resp_ids`` (B*G, T)
        and ``resp_mask``: log-probs (B*G, T) and entropies or None (``response_logprobs``)."""
        prompt, mask = self.prompt_embeds(texts, speakers)
        if resp_ids is None:
            return prompt, mask
        return response_logprobs(self.llm, prompt, mask, resp_ids, resp_mask, temperature, with_entropy)

    def response_logits(self, texts: list[str], speakers: list[str], resp_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits over the speech vocabulary at each response position.
        resp_ids (N, T) with N = B (one response per prompt) -> (N, T, K + 1)."""
        prompt, mask = self.prompt_embeds(texts, speakers)
        if resp_ids.shape[0] != prompt.shape[0]:
            raise ValueError(f"response_logits wants one response per prompt: {resp_ids.shape[0]} vs {prompt.shape[0]}")
        t = resp_ids.shape[1]
        emb = self.llm.get_input_embeddings()(resp_ids.clamp(max=self.pad_id))
        inputs = torch.cat([prompt, emb.to(prompt.dtype)], 1)
        full = torch.cat([mask, torch.ones(mask.shape[0], t, dtype=mask.dtype, device=mask.device)], 1)
        pos = (full.cumsum(1) - 1).clamp(min=0)
        return self.llm(inputs_embeds=inputs, attention_mask=full, position_ids=pos, use_cache=False,
                        logits_to_keep=t + 1).logits[:, :t]
