"""The fast torch engine against the simple path: a no-cache sampler that re-runs the
whole sequence for every new token, with the same random stream."""
import pytest
import torch

from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.engines.torch_engine import filter_logits, sample_inverse_cdf
from speech_rl.models import build_audio_llm
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_audio_llm(**TINY_MODEL).eval()


@pytest.fixture(scope="module")
def prompts(model):
    torch.manual_seed(1)
    with torch.no_grad():
        frames, lens = model.encode(torch.randn(3, 120, 80), torch.tensor([120, 80, 50]))
        return model(frames, lens)


def frequent_token(model, prompts) -> int:
    """A token the untrained model emits often but not always: used as EOS so that rows
    finish at different steps."""
    with torch.no_grad():
        logits = model.llm(inputs_embeds=prompts[0], attention_mask=prompts[1]).logits[:, -1]
    return int(torch.softmax(logits, -1).mean(0).argsort()[-3])


@torch.no_grad()
def simple_sampler(lm, emb, mask, g, p: SamplingParams, eos: int, pad: int, seed: int):
    """No KV cache, no row dropping: every step re-embeds the full sequence of all B*G rows."""
    gen = torch.Generator().manual_seed(seed)
    emb, mask = emb.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)
    n = emb.shape[0]
    toks = torch.full((n, p.max_new_tokens), pad)
    lps = torch.zeros(n, p.max_new_tokens)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(p.max_new_tokens):
        inp = torch.cat([emb, lm.get_input_embeddings()(toks[:, :t].clamp(min=0))], 1)
        m = torch.cat([mask, torch.ones(n, t, dtype=mask.dtype)], 1)
        logits = lm(inputs_embeds=inp, attention_mask=m, position_ids=(m.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
        scaled = logits.float() / p.temperature
        u = torch.rand(n, generator=gen)
        tok = sample_inverse_cdf(torch.softmax(filter_logits(scaled, p.top_k, p.top_p), -1), u)
        lp = torch.log_softmax(scaled, -1).gather(1, tok[:, None]).squeeze(1)
        toks[~done, t], lps[~done, t] = tok[~done], lp[~done]
        done |= tok == eos
        if done.all():
            return toks[:, : t + 1], lps[:, : t + 1], done
    return toks, lps, done


@pytest.mark.parametrize("drop,frac", [(True, 0.0), (True, 0.3), (False, 0.0)])
@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=16, temperature=1.0),
                                    SamplingParams(max_new_tokens=16, temperature=0.8, top_p=0.9, top_k=20)])
def test_same_tokens_as_the_simple_path(model, prompts, drop, frac, params):
    eos, pad = frequent_token(model, prompts), model.tokenizer.pad_id
    ref_toks, ref_lps, ref_done = simple_sampler(model.llm, *prompts, 4, params, eos, pad, seed=3)
    lens = (ref_toks != pad).sum(1)
    assert 0 < int(ref_done.sum()) < len(ref_done) and len(set(lens[ref_done].tolist())) > 2, \
        "precondition: rows must finish at several different steps"
    eng = TorchEngine(model.llm, eos_id=eos, pad_id=pad, seed=3, drop_finished=drop, compact_frac=frac)
    r = eng.generate(*prompts, group_size=4, params=params)
    assert torch.equal(r.tokens, ref_toks)
    assert torch.equal(r.finished, ref_done)
    torch.testing.assert_close(r.logprobs, ref_lps * r.mask, rtol=0, atol=2e-5)


def test_finished_rows_leave_the_decode_batch(model, prompts):
    eos = frequent_token(model, prompts)
    rows_per_call = []
    hook = model.llm.register_forward_hook(lambda mod, args, kw, out: rows_per_call.append(
        (kw.get("input_ids") if kw.get("input_ids") is not None else kw["inputs_embeds"]).shape[0]), with_kwargs=True)
    try:
        for drop in (True, False):
            rows_per_call.clear()
            eng = TorchEngine(model.llm, eos_id=eos, pad_id=model.tokenizer.pad_id, seed=3, drop_finished=drop,
                              compact_frac=0.0)
            eng.lm = model.llm                         # observe the hooked module itself
            eng._decode = model.llm
            eng.generate(*prompts, group_size=4, params=SamplingParams(max_new_tokens=16))
            decode_rows = rows_per_call[1:]            # first call: the prefill of 3 prompts
            assert rows_per_call[0] == 3
            if drop:
                assert decode_rows[-1] < decode_rows[0] == 12 and decode_rows == sorted(decode_rows, reverse=True)
            else:
                assert set(decode_rows) == {12}
    finally:
        hook.remove()


def test_compile_option_gives_the_same_tokens(model, prompts):
    pytest.importorskip("torch._inductor")
    p = SamplingParams(max_new_tokens=6, temperature=1.0)
    kw = dict(eos_id=model.tokenizer.eos_id, pad_id=model.tokenizer.pad_id, seed=2)
    plain = TorchEngine(model.llm, **kw).generate(*prompts, 2, p)
    compiled = TorchEngine(model.llm, compile=True, **kw).generate(*prompts, 2, p)
    assert torch.equal(plain.tokens, compiled.tokens)


def test_bad_compact_frac():
    with pytest.raises(ValueError, match="compact_frac"):
        TorchEngine(torch.nn.Linear(2, 2), eos_id=0, pad_id=1, compact_frac=2.0)
