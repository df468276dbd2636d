"""TTS LM: text -> discrete acoustic tokens, CosyVoice2's layout on an HF causal LM.

The sequence is ``[spk | text tokens | sos | speech tokens | eos]``. The prompt part
(speaker, text, sos) enters as embeddings from tables of its own; the causal LM's own
vocabulary is the speech codebook plus ``eos``,
so its output head can only emit speech tokens or stop, and the rollout engines run
it exactly like the ASR LLM (prompt embeddings in, token ids out). The vocabulary is
the K codes plus ``eos`` (id ``K``), which also pads: a pad id of its own would be a
token the head could sample.

``llm.speech_tokens`` (with ``llm.pretrained_path``) takes instead a causal LM in CosyVoice2's
Hugging Face layout (what its GRPO recipe converts the LLM to): one vocabulary of text tokens
and speech tokens ``<|s_0|>`` ... ``<|s_K-1|>``, the prompt ``[<|sos|> | text | <|task_id|>]``
(no speaker input: the LM of CosyVoice2 has none), speech tokens out until an EOS token, an
untied ``lm_head`` that may carry a bias (read from the checkpoint's safetensors; transformers'
``Qwen2ForCausalLM`` has no head bias and would drop it). The checkpoint's embedding table
stays the text embedding; the LM gets an input table and a head of the K speech rows plus the
EOS row (copies of the checkpoint's rows), so engines sample speech tokens or stop, exactly as
with the default layout. ``hf_lm()`` writes the rows back into a full-vocabulary HF LM.
The text tokenizer must then be the checkpoint's (``tokenizer: HFTokenizer``).
"""
from __future__ import annotations

import torch
from torch import nn

from speech_rl.models.llm import build_causal_lm, response_logprobs

SPEECH_TOKENS = {"token": "<|s_{}|>", "sos": "<|sos|>", "task_id": "<|task_id|>", "eos": "<|eos1|>"}


class TTSLM(nn.Module):
    """Args: text_tokenizer (``encode``, ``vocab_size``), n_codes (K, speech codebook
    size), speakers (names; index = speaker id), llm (``build_causal_lm`` kwargs)."""

    def __init__(self, text_tokenizer, n_codes: int, speakers: list[str], llm: dict):
        super().__init__()
        if n_codes < 2 or not speakers:
            raise ValueError(f"TTSLM needs n_codes >= 2 and at least one speaker, got {n_codes}, {speakers!r}")
        self.tokenizer, self.n_codes, self.speakers = text_tokenizer, n_codes, list(speakers)
        self.eos_id = self.pad_id = n_codes
        llm = dict(llm)
        layout = llm.pop("speech_tokens", None)
        self._spk_index = {s: i for i, s in enumerate(self.speakers)}
        if layout is not None:                    # {} takes every default token name
            self._from_hf_layout(llm, {**SPEECH_TOKENS, **dict(layout)})
            return
        self.layout = None
        self.llm = build_causal_lm(vocab_size=n_codes + 1, **llm)
        h = self.llm.get_input_embeddings().embedding_dim
        self.text_embed = nn.Embedding(text_tokenizer.vocab_size, h)
        self.spk_embed = nn.Embedding(len(self.speakers), h)
        self.sos = nn.Parameter(torch.randn(h) * 0.02)

    def _from_hf_layout(self, llm: dict, layout: dict) -> None:
        """CosyVoice2's HF layout (see the module docstring)."""
        path = llm.get("pretrained_path")
        if not path:
            raise ValueError("model.lm.speech_tokens needs model.lm.pretrained_path (a CosyVoice2-style HF LM folder)")
        hf_tok = getattr(self.tokenizer, "tok", None)
        if hf_tok is None:
            raise ValueError("model.lm.speech_tokens needs the checkpoint's own text tokenizer "
                             "(tokenizer: {_target_: speech_rl.data.tokenizer.HFTokenizer, path: <the LM folder>})")

        def tid(name: str) -> int:
            i = hf_tok.convert_tokens_to_ids(name)
            if i is None or hf_tok.convert_ids_to_tokens(i) != name:
                raise ValueError(f"{path}: the tokenizer has no token {name!r} (model.lm.speech_tokens)")
            return i

        self.layout_path = str(path)
        rows = [tid(layout["token"].format(k)) for k in range(self.n_codes)] + [tid(layout["eos"])]
        self.layout = {**layout, "rows": rows, "sos_id": tid(layout["sos"]), "task_id": tid(layout["task_id"])}
        full = build_causal_lm(vocab_size=self.tokenizer.vocab_size, **llm)
        emb, head = full.get_input_embeddings(), full.get_output_embeddings()
        bias = head_bias(path)
        idx = torch.tensor(rows)
        with torch.no_grad():
            small_in = nn.Embedding(len(rows), emb.embedding_dim).to(emb.weight.dtype)
            small_in.weight.copy_(emb.weight[idx])
            small_out = nn.Linear(emb.embedding_dim, len(rows), bias=bias is not None).to(head.weight.dtype)
            small_out.weight.copy_(head.weight[idx])
            if bias is not None:
                small_out.bias.copy_(bias[idx])
            self.sos = nn.Parameter(emb.weight[self.layout["sos_id"]].clone())
            self.task = nn.Parameter(emb.weight[self.layout["task_id"]].clone())
        self.text_embed = emb                               # the checkpoint's whole table embeds the text
        full.set_input_embeddings(small_in)
        full.lm_head = small_out
        full.config.vocab_size, full.config.tie_word_embeddings = len(rows), False
        self.llm = full

    def hf_lm(self) -> nn.Module:
        """CosyVoice2 layout: a full-vocabulary copy of the LM (an HF causal LM whose table is the
        text table with this LM's speech / EOS / sos / task rows written back, and whose head has
        them too: rows it does not train keep the checkpoint's), for ``save_pretrained``."""
        if self.layout is None:
            raise ValueError("hf_lm: this TTS LM has speech-rl's own layout (no HF vocabulary to write back into)")
        full = build_causal_lm(vocab_size=self.tokenizer.vocab_size, pretrained_path=self.layout_path)
        emb, head = full.get_input_embeddings(), full.get_output_embeddings()
        bias = head_bias(self.layout_path)
        idx = torch.tensor(self.layout["rows"])
        with torch.no_grad():
            emb.weight.copy_(self.text_embed.weight)
            emb.weight[idx] = self.llm.get_input_embeddings().weight
            emb.weight[self.layout["sos_id"]] = self.sos
            emb.weight[self.layout["task_id"]] = self.task
            if bias is not None or self.llm.lm_head.bias is not None:
                new = nn.Linear(head.in_features, head.out_features, bias=True)
                new.weight.copy_(head.weight)
                new.bias.copy_(bias if bias is not None else torch.zeros(head.out_features))
                head = full.lm_head = new
            head.weight[idx] = self.llm.lm_head.weight
            if head.bias is not None and self.llm.lm_head.bias is not None:
                head.bias[idx] = self.llm.lm_head.bias
        full.model.load_state_dict({k: v for k, v in self.llm.model.state_dict().items()
                                    if not k.startswith("embed_tokens.")}, strict=False)
        return full

    def speaker_ids(self, speakers: list[str], device=None) -> torch.Tensor:
        """Speaker names -> (B,) long; an unknown name raises, listing the known ones."""
        try:
            return torch.tensor([self._spk_index[s] for s in speakers], dtype=torch.long, device=device)
        except KeyError as exc:
            raise ValueError(f"unknown speaker {exc.args[0]!r}; this TTS LM knows {self.speakers}") from exc

    def prompt_embeds(self, texts: list[str], speakers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> left-padded ``[spk | text | sos]`` (CosyVoice2 layout: ``[sos | text | task_id]``)
        embeddings (B, Lp, H) and mask (B, Lp) long."""
        if len(texts) != len(speakers):
            raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
        dev = self.sos.device
        ids_of = self.speaker_ids(speakers, dev)                                          # (B,) (names checked)
        spk = self.spk_embed(ids_of) if self.layout is None else None                   # (B, H)
        seqs = []
        for i, t in enumerate(texts):
            ids = self.tokenizer.encode(t)
            if not ids:
                raise ValueError(f"empty text for TTS (row {i})")
            text = self.text_embed(torch.tensor(ids, device=dev))
            if self.layout is None:
                seqs.append(torch.cat([spk[i:i + 1], text, self.sos[None]]))
            else:                                                                        # CosyVoice2
                seqs.append(torch.cat([self.sos[None], text, self.task[None]]))
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


def head_bias(path: str) -> torch.Tensor | None:
    """``lm_head.bias`` from a checkpoint folder's safetensors (single file or sharded), or None."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shard = json.loads(index.read_text())["weight_map"].get("lm_head.bias")
        files = [folder / shard] if shard else []
    else:
        files = [f for f in [folder / "model.safetensors"] if f.is_file()]
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            if "lm_head.bias" in st.keys():
                return st.get_tensor("lm_head.bias").float()
    return None
