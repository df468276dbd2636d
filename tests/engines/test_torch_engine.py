"""The fast torch engine against the simple path: a no-cache sampler that re-runs the
whole sequence for every new token, with the same random stream."""
import pytest
import torch

from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.engines.torch_engine import filter_logits, sample_inverse_cdf


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


@pytest.mark.parametrize("decode", ["static", "hf"])
@pytest.mark.parametrize("drop,frac", [(True, 0.0), (True, 0.3), (False, 0.0)])
@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=16, temperature=1.0),
                                    SamplingParams(max_new_tokens=16, temperature=0.8, top_p=0.9, top_k=20)])
def test_same_tokens_as_the_simple_path(model, prompts, drop, frac, params, decode):
    eos, pad = frequent_token(model, prompts), model.tokenizer.pad_id
    ref_toks, ref_lps, ref_done = simple_sampler(model.llm, *prompts, 4, params, eos, pad, seed=3)
    lens = (ref_toks != pad).sum(1)
    assert 0 < int(ref_done.sum()) < len(ref_done) and len(set(lens[ref_done].tolist())) > 2, \
        "precondition: rows must finish at several different steps"
    eng = TorchEngine(model.llm, eos_id=eos, pad_id=pad, seed=3, drop_finished=drop, compact_frac=frac,
                      decode=decode)
    r = eng.generate(*prompts, group_size=4, params=params)
    assert torch.equal(r.tokens, ref_toks)
    assert torch.equal(r.finished, ref_done)
    torch.testing.assert_close(r.logprobs, ref_lps * r.mask, rtol=0, atol=2e-5)


@pytest.mark.parametrize("decode", ["static", "hf"])
def test_finished_rows_leave_the_decode_batch(model, prompts, decode):
    eos = frequent_token(model, prompts)
    rows_per_call = []
    mlp = model.llm.model.layers[0].mlp                # called by both decode paths
    hook = mlp.register_forward_hook(lambda mod, args, out: rows_per_call.append(args[0].shape[0]))
    try:
        for drop in (True, False):
            rows_per_call.clear()
            eng = TorchEngine(model.llm, eos_id=eos, pad_id=model.tokenizer.pad_id, seed=3, drop_finished=drop,
                              compact_frac=0.0, decode=decode)
            eng.lm.model.layers[0].mlp = mlp           # observe the hooked module itself
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


def test_bad_engine_options(model):
    with pytest.raises(ValueError, match="compact_frac"):
        TorchEngine(model.llm, eos_id=0, pad_id=1, compact_frac=2.0)
    with pytest.raises(ValueError, match="decode must be"):
        TorchEngine(model.llm, eos_id=0, pad_id=1, decode="fast")
    with pytest.raises(ValueError, match="decode=static cannot run GPT2LMHeadModel"):
        from transformers import GPT2Config, GPT2LMHeadModel
        TorchEngine(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)), eos_id=0, pad_id=1,
                    decode="static")


def test_static_decode_logits_match_the_model_forward(model, prompts):
    """Qwen2 as built here; StaticDecoder's next-token logits equal HF's cached forward."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from speech_rl.engines.static_decode import StaticDecoder

    torch.manual_seed(0)
    qwen3 = Qwen3ForCausalLM(Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    for lm in (model.llm, qwen3):
        emb = prompts[0][..., : lm.config.hidden_size]
        mask = prompts[1]
        with torch.no_grad():
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)
            dec = StaticDecoder(lm, out.past_key_values, mask, 3)
            tok, nxt, attn = torch.tensor([5, 7, 9]), mask.sum(1), mask
            for step in range(3):
                attn = torch.cat([attn, attn.new_ones(3, 1)], 1)
                ref = lm(input_ids=tok[:, None], attention_mask=attn, position_ids=nxt[:, None] + step,
                         past_key_values=out.past_key_values, use_cache=True).logits[:, -1]
                torch.testing.assert_close(dec.step(tok, nxt + step, step), ref, rtol=0, atol=1e-5)
                tok = ref.argmax(-1)


def test_bf16_engine_copy_and_outer_autocast(model, prompts):
    eng = TorchEngine(model.llm, eos_id=model.tokenizer.eos_id, pad_id=model.tokenizer.pad_id, dtype="bfloat16")
    assert next(eng.lm.parameters()).dtype == torch.bfloat16
    assert next(model.llm.parameters()).dtype == torch.float32          # the policy is untouched
    p = SamplingParams(max_new_tokens=8, temperature=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):                   # Lightning's bf16-mixed context
        r = eng.generate(*prompts, 2, p)
    assert r.logprobs.dtype == torch.float32
    with torch.no_grad():
        lp, _ = model.response_logprobs(prompts[0].repeat_interleave(2, 0), prompts[1].repeat_interleave(2, 0),
                                        r.tokens, r.mask)
    assert (lp - r.logprobs).abs().max() < 0.1                          # bf16 rounding, not a different model
    fp32 = TorchEngine(model.llm, eos_id=0, pad_id=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r32 = fp32.generate(*prompts, 1, SamplingParams(max_new_tokens=4, temperature=0.7))
    with torch.no_grad():
        lp, _ = model.response_logprobs(*prompts, r32.tokens, r32.mask, temperature=0.7)
    torch.testing.assert_close(lp, r32.logprobs, rtol=0, atol=2e-5)  # autocast did not leak into the engine
    with pytest.raises(ValueError, match="not a torch dtype"):
        TorchEngine(model.llm, eos_id=0, pad_id=1, dtype="bf16")


def test_rollout_response_ids_drop_eos_and_padding():
    import torch

    from speech_rl.engines.base import Rollout

    tokens = torch.tensor([[5, 6, 2, 0], [7, 8, 9, 4]])        # row 0 stopped (EOS 2), row 1 ran out
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    ro = Rollout(tokens, torch.zeros(2, 4), mask, torch.tensor([True, False]), group_size=1)
    assert ro.response_ids() == [[5, 6], [7, 8, 9, 4]]


def test_kv_cache_calls_raise_no_deprecation_warning(model, prompts):
    """The engine's decode loop and the policy's shared-prompt scoring pass the KV cache under the
    keyword the installed transformers takes (no "past_key_values is deprecated" warning)."""
    import warnings

    from speech_rl.models.llm import response_logprobs

    eng = TorchEngine(model.llm, eos_id=model.tokenizer.eos_id, pad_id=model.tokenizer.pad_id, seed=0,
                      decode="hf")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = eng.generate(*prompts, group_size=2, params=SamplingParams(max_new_tokens=6, temperature=1.0))
        response_logprobs(model.llm, *prompts, r.tokens, r.mask)
    assert not [str(w.message) for w in seen if "past_key_values" in str(w.message) or "cache" in str(w.message)]
