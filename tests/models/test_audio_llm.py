import pytest
import torch

from speech_rl.models import ConvTransformerEncoder, Projector, WhisperAudioEncoder, build_audio_llm
from speech_rl.models.audio_llm import load_audio_llm_weights
from tests.conftest import TINY_MODEL


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_audio_llm(**TINY_MODEL).eval()


def test_encoder_and_projector_lengths():
    enc = ConvTransformerEncoder(n_mels=80, d_model=32, n_layers=1, n_heads=4)
    out, lens = enc(torch.randn(2, 101, 80), torch.tensor([101, 37]))
    assert out.shape == (2, 26, 32) and lens.tolist() == [26, 10]    # ceil(ceil(T/2)/2)
    p, plens = Projector(32, 16, stack=3)(out, lens)
    assert p.shape == (2, 9, 16) and plens.tolist() == [9, 4]


def test_chunked_encoder_attends_within_windows():
    torch.manual_seed(0)
    enc = ConvTransformerEncoder(n_mels=80, d_model=32, n_layers=2, n_heads=4, dropout=0.0, chunk_frames=10).eval()
    feats, lens = torch.randn(2, 120, 80), torch.tensor([120, 50])       # 30 and 13 frames
    with torch.no_grad():
        out, olens = enc(feats, lens)
        assert out.shape == (2, 30, 32) and olens.tolist() == [30, 13] and torch.isfinite(out).all()
        # a window does not see features beyond the conv front end's reach (frame 4t +- 8)
        far = feats.clone()
        far[0, 60:] += 3.0                               # input frames >= 60 -> encoder frames >= ~13
        out_far, _ = enc(far, lens)
        torch.testing.assert_close(out_far[0, :10], out[0, :10], rtol=0, atol=1e-6)
        assert not torch.allclose(out_far[0, 20:], out[0, 20:])
        # batch-independent: the 13-frame utterance encodes the same alone (its 3rd window is
        # partly padding, the other row's 3rd window is full)
        alone, _ = enc(feats[1:, :50], lens[1:])
        torch.testing.assert_close(out[1, :13], alone[0], rtol=0, atol=1e-5)
        # without chunks, every frame sees the whole utterance
        enc.chunk_frames = None
        glob, _ = enc(far, lens)
        glob0, _ = enc(feats, lens)
        assert not torch.allclose(glob[0, :10], glob0[0, :10])
    with pytest.raises(ValueError, match="chunk_frames"):
        ConvTransformerEncoder(n_mels=80, d_model=32, n_layers=1, n_heads=4, chunk_frames=0)


def test_padding_does_not_change_an_utterance(model):
    # utterance 0 alone vs in a batch with a longer utterance (left padding of its prompt)
    feats = torch.randn(2, 160, 80)
    lens = torch.tensor([90, 160])
    ids = torch.tensor([[7, 8, 9, 2], [10, 11, 2, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        frames, flens = model.encode(feats, lens)
        lp_batch, ent = model(frames, flens, ids, mask, with_entropy=True)
        f0, l0 = model.encode(feats[:1, :90], lens[:1])
        lp_alone, _ = model(f0, l0, ids[:1], mask[:1])
    torch.testing.assert_close(lp_batch[0], lp_alone[0], rtol=0, atol=2e-5)
    assert lp_batch[1, 3] == 0 and ent[1, 3] == 0 and (ent[0] > 0).all()


def test_prompt_layout(model):
    frames = torch.randn(2, 8, 64)
    emb, mask = model(frames, torch.tensor([8, 4]))
    # prefix (2) + audio (ceil(8/2)=4 / ceil(4/2)=2) + suffix (1)
    assert emb.shape == (2, 7, 64) and mask.sum(1).tolist() == [7, 5]
    assert mask[1].tolist() == [0, 0, 1, 1, 1, 1, 1]                 # left padded
    torch.testing.assert_close(emb[1, 2], model.llm.get_input_embeddings()(model.prefix_ids)[0])


def test_init_from_checkpoint_and_shape_mismatch(tmp_path, model):
    torch.save({"state_dict": {f"policy.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "a.ckpt")
    other = build_audio_llm(**TINY_MODEL, init_from=str(tmp_path / "a.ckpt"))
    for (k, v), (_, w) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(v, w), k
    bigger = dict(TINY_MODEL, llm=dict(TINY_MODEL["llm"], hidden_size=96))
    with pytest.raises(ValueError, match="another shape"):
        build_audio_llm(**bigger, init_from=str(tmp_path / "a.ckpt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio_llm_weights(model, str(tmp_path / "none.ckpt"))


def test_init_from_warns_about_settings_that_differ(tmp_path, model, caplog):
    sd = {f"policy.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "hyper_parameters": {"model": dict(TINY_MODEL)}}, tmp_path / "a.ckpt")
    with caplog.at_level("WARNING", logger="speech_rl.checkpoint"):
        build_audio_llm(**TINY_MODEL, init_from=str(tmp_path / "a.ckpt"))
    assert "differs" not in caplog.text
    chunked = dict(TINY_MODEL, encoder=dict(TINY_MODEL["encoder"], chunk_frames=8))
    with caplog.at_level("WARNING", logger="speech_rl.checkpoint"):
        build_audio_llm(**chunked, init_from=str(tmp_path / "a.ckpt"))
    assert "model.encoder.chunk_frames: None -> 8" in caplog.text


def test_whisper_encoder_option_builds_from_config():
    enc = WhisperAudioEncoder(num_mel_bins=80, d_model=32, encoder_layers=1, encoder_attention_heads=2,
                              encoder_ffn_dim=64, max_source_positions=50)
    out, lens = enc(torch.randn(2, 60, 80), torch.tensor([60, 30]))
    assert out.shape == (2, 50, 32) and lens.tolist() == [30, 15]
    m = build_audio_llm(TINY_MODEL["tokenizer"], enc, TINY_MODEL["llm"])
    emb, mask = m(out, lens)
    assert emb.shape[0] == 2 and mask.sum(1).tolist() == [15 + 3, 8 + 3]


def test_shared_prompt_scoring_equals_repeated_prompts(model):
    """Each prompt runs once and its KV cache is shared by its G responses: the log-probs,
    entropies and gradients equal running the prompt G times."""
    from speech_rl.models.llm import response_logprobs

    torch.manual_seed(0)
    g = 3
    frames, lens = model.encode(torch.randn(2, 120, 80), torch.tensor([120, 70]))
    prompt, pmask = model(frames, lens)
    resp = torch.randint(3, model.tokenizer.vocab_size, (2 * g, 7))
    rmask = torch.ones(2 * g, 7)
    rmask[1, 4:] = 0
    rmask[5, 1:] = 0
    results = []
    for shared in (True, False):
        model.zero_grad()
        p, m = (prompt, pmask) if shared else (prompt.repeat_interleave(g, 0), pmask.repeat_interleave(g, 0))
        logp, ent = response_logprobs(model.llm, p, m, resp, rmask, 0.8, with_entropy=True)   # G=3 or G=1 path
        (logp.sum() + 0.1 * ent.sum()).backward(retain_graph=True)
        results.append((logp.detach(), ent.detach(), [q.grad.clone() for q in model.llm.parameters()]))
    (lp1, e1, g1), (lp2, e2, g2) = results
    torch.testing.assert_close(lp1, lp2, rtol=0, atol=1e-5)
    torch.testing.assert_close(e1, e2, rtol=0, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="do not split into groups"):
        response_logprobs(model.llm, prompt, pmask, resp[:5], rmask[:5])


def test_transcribe_waveforms_batches_like_the_feature_path(model):
    # waveforms through the ASR front end give the transcripts of the same features fed
    # directly, for any batch size; a clip shorter than one window does not fail the batch
    from speech_rl.data.features import LogMel, pad_features
    from speech_rl.engines import SamplingParams, TorchEngine

    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=g) for n in (16000, 9000, 12000)]
    eng = TorchEngine(model.llm, model.tokenizer.eos_id, model.tokenizer.pad_id)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    logmel = LogMel(n_mels=model.encoder.n_mels)
    direct = [model.transcribe(*pad_features([logmel(w)]), eng, params)[0] for w in waves]
    assert model.transcribe_waveforms(waves, eng, params, batch_size=1) == direct
    assert model.transcribe_waveforms(waves, eng, params, batch_size=2) == direct
    assert len(model.transcribe_waveforms([torch.zeros(100)] + waves[:1], eng, params)) == 2
    with pytest.raises(ValueError, match="22050 Hz"):
        model.transcribe_waveforms(waves, eng, params, sample_rate=22050)


def test_whisper_decoder_lm_scores_and_generates_like_the_qwen_path(tmp_path):
    """With Whisper's decoder (GPT-2 shape) as the LM, the shared-prompt KV cache gives the
    repeated-prompt log-probs, and the torch engine's greedy tokens are the argmax of the
    policy's own re-scoring (the cache and position handling hold for this family too)."""
    from speech_rl.engines import SamplingParams, TorchEngine
    from speech_rl.models.llm import response_logprobs
    from tests.models.test_whisper_ct2 import _tiny_hf_whisper

    _, path = _tiny_hf_whisper(tmp_path)
    torch.manual_seed(0)
    enc = ConvTransformerEncoder(n_mels=80, d_model=32, n_layers=1, n_heads=2, dropout=0.0)
    m = build_audio_llm(TINY_MODEL["tokenizer"], enc, {"whisper_decoder": str(path), "max_positions": 128}).eval()
    frames, lens = m.encode(torch.randn(2, 120, 80), torch.tensor([120, 70]))
    prompt, pmask = m(frames, lens)
    resp = torch.randint(6, m.tokenizer.vocab_size, (4, 6))
    rmask = torch.ones(4, 6)
    a, _ = response_logprobs(m.llm, prompt, pmask, resp, rmask)
    b, _ = response_logprobs(m.llm, prompt.repeat_interleave(2, 0), pmask.repeat_interleave(2, 0), resp, rmask)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    eng = TorchEngine(m.llm, eos_id=-1, pad_id=0)                     # no EOS: all 8 tokens scored
    out = eng.generate(prompt, pmask, 1, SamplingParams(max_new_tokens=8, temperature=0.0))
    logp, _ = response_logprobs(m.llm, prompt, pmask, out.tokens, torch.ones_like(out.tokens, dtype=torch.float))
    torch.testing.assert_close(logp, out.logprobs, rtol=0, atol=1e-4)
    full = torch.cat([prompt, m.llm.get_input_embeddings()(out.tokens)], 1)      # greedy = argmax of a plain forward
    fmask = torch.cat([pmask, torch.ones_like(out.tokens)], 1)
    logits = m.llm(inputs_embeds=full, attention_mask=fmask, position_ids=(fmask.cumsum(1) - 1).clamp(min=0)).logits
    assert torch.equal(logits[:, prompt.shape[1] - 1:-1].argmax(-1), out.tokens)


def test_gradient_checkpointing_gives_the_same_logprobs_and_gradients():
    """model.llm.gradient_checkpointing: the G > 1 scoring falls back to one prompt per
    response (HF turns the KV cache off under checkpointing); same values at fp32 tolerance."""
    from speech_rl.models.llm import build_causal_lm, checkpointing, response_logprobs

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        lm = build_causal_lm(vocab_size=40, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                             gradient_checkpointing=ckpt).train()
        assert checkpointing(lm) == ckpt
        g = torch.Generator().manual_seed(1)
        prompt = torch.randn(2, 6, 64, generator=g, requires_grad=True)
        mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
        ids = torch.randint(3, 40, (6, 5), generator=g)
        rmask = torch.ones(6, 5)
        logp, ent = response_logprobs(lm, prompt, mask, ids, rmask, with_entropy=True)
        (logp.sum() + ent.sum()).backward()
        grads.append((logp.detach(), ent.detach(), prompt.grad.clone(),
                      {n: p.grad.clone() for n, p in lm.named_parameters()}))
    (a, ea, pa, ga), (b, eb, pb, gb) = grads
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-5, msg=n)


def test_attention_dropout_is_on_in_training_mode_only_and_is_reported():
    from speech_rl.models.llm import build_causal_lm, policy_dropout

    kw = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)
    lm = build_causal_lm(40, attention_dropout=0.5, **kw)
    ids = torch.randint(0, 40, (2, 12))
    torch.manual_seed(0)
    lm.train()
    a, b = lm(input_ids=ids).logits, lm(input_ids=ids).logits
    assert not torch.allclose(a, b)                      # two draws of the dropout masks
    lm.eval()
    with torch.no_grad():
        assert torch.equal(lm(input_ids=ids).logits, lm(input_ids=ids).logits)
    assert policy_dropout(lm) == ["attention_dropout=0.5"]
    assert policy_dropout(build_causal_lm(40, **kw)) == []
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\), got 1.0"):
        build_causal_lm(40, attention_dropout=1.0, **kw)
    with pytest.raises(ValueError, match="Qwen2 built from a config only"):
        build_causal_lm(40, pretrained_path="/nonexistent", attention_dropout=0.1)
