"""Run by tests/engines/test_vllm_death.py in a fresh process (vLLM reads its multiprocessing
switch from the environment once): a vLLM engine with its engine-core process, killed with
SIGKILL between two calls and during one; prints one JSON line of what each call did."""
import json
import os
import signal
import threading
import time

import torch


def main():
    from speech_rl.engines import SamplingParams, build_engine
    from speech_rl.models import build_audio_llm
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    model = build_audio_llm(**dict(TINY_MODEL, llm={"hidden_size": 64, "num_layers": 2, "num_heads": 2,
                                                    "num_kv_heads": 1})).eval()
    with torch.no_grad():
        frames, lens = model.encode(torch.randn(2, 120, 80), torch.tensor([120, 80]))
        prompt, mask = model(frames, lens)
    out = {}
    for case in ("between", "during"):
        print("case", case, flush=True)
        eng = build_engine("vllm", lm=model.llm, eos_id=model.tokenizer.vocab_size + 10 ** 6, pad_id=0,
                           seed=0, multiprocessing=True)                 # no EOS: every row runs its length
        eng.generate(prompt, mask, 2, SamplingParams(max_new_tokens=4, temperature=1.0))
        procs = eng.llm.llm_engine.engine_core.resources.engine_manager.processes
        kill = lambda: [os.kill(p.pid, signal.SIGKILL) for p in procs]           # noqa: E731
        if case == "between":
            kill()
            time.sleep(2.0)                      # vLLM's monitor notices within its 1 s wait
        else:
            threading.Timer(0.5, kill).start()   # while a long rollout runs (64 rows x 900 tokens)
        print("killed" if case == "between" else "timer set", flush=True)
        t0 = time.time()
        try:
            eng.generate(prompt, mask, 32, SamplingParams(max_new_tokens=900, temperature=1.0))
            out[case] = {"raised": None, "seconds": time.time() - t0}
        except RuntimeError as exc:
            out[case] = {"raised": str(exc), "seconds": time.time() - t0}
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
