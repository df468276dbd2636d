"""Peak memory and time of one GRPO policy update on a ~0.5B real-architecture LM (random
weights, Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 / 2 heads, FFN 4864, vocab 151,936;
494M parameters) at fp32, bf16-mixed, bf16 weights, LoRA and gradient checkpointing.

Each setting runs in a fresh process (peak RSS is a process's high-water mark): build the LM,
AdamW over what trains, then ``--steps`` updates of the step speech-rl runs: the reference
policy's log-probs (no grad; the LM with adapters off under LoRA, a frozen copy otherwise),
the policy's log-probs of G sampled responses after a shared prompt of embeddings
(``response_logprobs``), ``grpo_loss`` with KL, backward, clip, AdamW. Prints, per setting,
the parameters that train, peak RSS (GiB) and the median step seconds after the first, and
the ratios to fp32 measured side by side in this run.

    python benchmarks/policy_memory.py                       # all settings (~10 min on 2 cores)
    python benchmarks/policy_memory.py --settings fp32 lora --prompts 2 --group 4
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "fp32": {},
    "bf16-mixed": {"autocast": True},                 # Lightning trainer.precision=bf16-mixed
    "bf16-true": {"dtype": "bfloat16"},               # trainer.precision=bf16-true: weights, grads, Adam in bf16
    "grad-ckpt": {"checkpointing": True},             # model.llm.gradient_checkpointing=true
    "lora": {"lora": 16},                             # model.lora.r=16 (reference = adapters off)
    "lora+bf16-mixed": {"lora": 16, "autocast": True},
}
QWEN25_05B = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                  max_positions=2048, tie_word_embeddings=True)


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20        # ru_maxrss is KiB on Linux


def run_one(name: str, prompts: int, group: int, prompt_len: int, new_tokens: int, steps: int) -> dict:
    import copy
    import contextlib

    import torch

    from speech_rl.algorithms.grpo import grpo_loss
    from speech_rl.models.llm import build_causal_lm, response_logprobs
    from speech_rl.models.lora import AdaptersOff, apply_lora

    s = SETTINGS[name]
    torch.manual_seed(0)
    lm = build_causal_lm(vocab_size=151936, gradient_checkpointing=bool(s.get("checkpointing")), **QWEN25_05B)
    if s.get("dtype"):
        lm = lm.to(getattr(torch, s["dtype"]))
    if s.get("lora"):
        lm = apply_lora(lm, r=s["lora"])
        ref = AdaptersOff(lm)
    else:
        ref = copy.deepcopy(lm).requires_grad_(False)
    lm.train()
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    built = rss_gib()
    dtype = next(lm.parameters()).dtype
    h, b, n = QWEN25_05B["hidden_size"], prompts, prompts * group
    prompt = torch.randn(b, prompt_len, h, dtype=dtype) * 0.02
    pmask = torch.ones(b, prompt_len, dtype=torch.long)
    resp = torch.randint(0, 151936, (n, new_tokens))
    rmask = torch.ones(n, new_tokens)
    adv = torch.randn(n)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if s.get("autocast") else contextlib.nullcontext
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with amp():
            with torch.no_grad():
                ref_logp, _ = response_logprobs(ref, prompt, pmask, resp, rmask)
            logp, _ = response_logprobs(lm, prompt, pmask, resp, rmask)
            loss, _ = grpo_loss(logp, logp.detach(), ref_logp, adv, rmask, clip_eps=0.2, beta=0.04)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"setting": name, "params_total": sum(p.numel() for p in lm.parameters()),
            "params_trained": sum(p.numel() for p in params), "rss_built_gib": built, "rss_peak_gib": rss_gib(),
            "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=192)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    shape = (a.prompts, a.group, a.prompt_len, a.new_tokens, a.steps)
    if a.one:
        print(json.dumps(run_one(a.one, *shape)))
        return 0
    rows = []
    for name in a.settings:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--prompts", str(a.prompts), "--group",
                              str(a.group), "--prompt-len", str(a.prompt_len), "--new-tokens", str(a.new_tokens),
                              "--steps", str(a.steps)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
    base = next((r for r in rows if r["setting"] == "fp32"), rows[0] if rows else None)
    print(f"policy update, {a.prompts} prompts x G={a.group}, prompt {a.prompt_len} embeddings, "
          f"{a.new_tokens} response tokens; median of steps 2..{a.steps}")
    print("| setting | trained params | peak RSS GiB | x fp32 | step s | x fp32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['params_trained'] / 1e6:.1f}M / {r['params_total'] / 1e6:.0f}M | "
              f"{r['rss_peak_gib']:.2f} | {r['rss_peak_gib'] / base['rss_peak_gib']:.2f} | {r['step_s']:.1f} | "
              f"{r['step_s'] / base['step_s']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
