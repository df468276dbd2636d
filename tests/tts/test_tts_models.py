import pytest
import torch

from speech_rl.data.features import LogMel
from speech_rl.data.tokenizer import CharTokenizer
from speech_rl.engines.base import SamplingParams
from speech_rl.engines.torch_engine import TorchEngine
from speech_rl.tts.flow import FlowDecoder
from speech_rl.tts.lm import TTSLM
from speech_rl.tts.token_asr import TokenASR
from speech_rl.tts.vocoder import GriffinLimVocoder

LLM = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2)


def _lm(k=16):
    torch.manual_seed(0)
    return TTSLM(CharTokenizer(), k, ["en-us", "en-gb"], LLM)


class TestTTSLM:
    def test_prompt_layout_and_errors(self):
        lm = _lm()
        emb, mask = lm.prompt_embeds(["hi", "hello"], ["en-us", "en-gb"])
        # [spk | text | sos]: 1 + 2 + 1 and 1 + 5 + 1, left padded
        assert emb.shape == (2, 7, 32) and mask.sum(1).tolist() == [4, 7] and mask[0, :3].sum() == 0
        assert torch.equal(emb[1, -1], lm.sos.detach()) and torch.equal(emb[0, 3], lm.spk_embed.weight[0].detach())
        with pytest.raises(ValueError, match="unknown speaker 'fr'"):
            lm.prompt_embeds(["hi"], ["fr"])
        with pytest.raises(ValueError, match=r"speech tokens must lie in \[0, 16\)"):
            lm.target_ids([[3, 16]])

    def test_engine_samples_speech_tokens_and_scores_agree(self):
        lm = _lm()
        prompt, mask = lm(["hello there", "hi"], ["en-us", "en-gb"])
        ro = TorchEngine(lm.llm, lm.eos_id, lm.pad_id, seed=0).generate(
            prompt.detach(), mask, 3, SamplingParams(max_new_tokens=12, temperature=1.0))
        assert ro.tokens.shape[0] == 6 and int(ro.tokens.max()) <= lm.pad_id
        resp = ro.tokens[ro.mask.bool()]
        assert int(resp.max()) <= lm.eos_id                       # only codes or eos inside the response
        # the policy's log-probs of the sampled tokens match the engine's, and the teacher-forced
        # logits give the same numbers
        logp, _ = lm(["hello there", "hi"], ["en-us", "en-gb"], ro.tokens, ro.mask, group_size=3)
        assert torch.allclose(logp * ro.mask, ro.logprobs, atol=1e-4)
        texts, spks = ["hello there"] * 3 + ["hi"] * 3, ["en-us"] * 3 + ["en-gb"] * 3
        lg = lm.response_logits(texts, spks, ro.tokens).log_softmax(-1)
        alt = lg.gather(-1, ro.tokens.clamp(max=lm.pad_id)[..., None])[..., 0] * ro.mask
        assert torch.allclose(alt, ro.logprobs, atol=1e-4)


def _train(fd, mel, tok, lens, spk, steps=100):
    """Adam (lr 1e-2) on the flow decoder's loss, flow noise seeded."""
    opt = torch.optim.Adam(fd.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        loss = fd.loss(mel, tok, lens, spk, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()


class TestFlowDecoder:
    def test_shapes_masking_and_untrained_sample_is_noise(self):
        fd = FlowDecoder(n_codes=8, n_speakers=2, n_mels=10, d_model=32, n_blocks=2)
        tok, lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
        mel, mel_lens = fd.sample(tok, lens, torch.tensor([0, 1]), n_steps=4, gen=torch.Generator().manual_seed(0))
        assert mel.shape == (2, 12, 10) and mel_lens.tolist() == [12, 8]
        assert mel[1, 8:].abs().sum() == 0
        # zero-initialised output layer: v = 0, so the sample is the initial noise
        ref = torch.randn(2, 12, 10, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(mel[0], ref[0])
        # the temperature scales the start noise; at 0 every path starts (and here stays) at 0
        half, _ = fd.sample(tok, lens, torch.tensor([0, 1]), n_steps=4, temperature=0.5,
                            gen=torch.Generator().manual_seed(0))
        assert torch.allclose(half[0], 0.5 * ref[0])
        zero, _ = fd.sample(tok, lens, torch.tensor([0, 1]), n_steps=4, temperature=0.0)
        assert zero.abs().sum() == 0
        with pytest.raises(ValueError, match="temperature must be >= 0, got -0.1"):
            fd.sample(tok, lens, torch.tensor([0, 1]), temperature=-0.1)
        with pytest.raises(ValueError, match="n_steps must be >= 1"):
            fd.sample(tok, lens, torch.tensor([0, 1]), n_steps=0)
        assert set(fd.loss_terms(torch.zeros(2, 12, 10), tok, lens, torch.tensor([0, 1]))) == {"flow"}   # no prior
        with pytest.raises(ValueError, match="mel has 5 frames but 3 tokens need 12"):
            fd.loss(torch.zeros(2, 5, 10), tok, lens, torch.tensor([0, 1]))

    def test_mel_normalisation_sets_the_noise_to_the_data_scale(self):
        # stats fitted from frames of mean 3, std 0.2 per bin; an untrained decoder (v = 0)
        # then returns the start noise mapped back to log-mel: mean + std * noise
        fd = FlowDecoder(n_codes=8, n_speakers=2, n_mels=10, d_model=32, n_blocks=2, mel_norm_utts=2,
                         prior_weight=1.0)
        assert not bool(fd.mel_stats_fitted) and {"mel_mean", "mel_std", "mel_stats_fitted"} <= set(fd.state_dict())
        g = torch.Generator().manual_seed(4)
        mels = [3 + 0.2 * torch.randn(400, 10, generator=g), 3 + 0.2 * torch.randn(300, 10, generator=g)]
        fd.fit_mel_stats(mels)
        frames = torch.cat(mels)
        assert torch.allclose(fd.mel_mean, frames.mean(0)) and torch.allclose(fd.mel_std, frames.std(0))
        assert bool(fd.mel_stats_fitted) and torch.allclose(fd.denormalise(fd.normalise(mels[0])), mels[0], atol=1e-5)
        tok, lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
        mel, _ = fd.sample(tok, lens, torch.tensor([0, 1]), n_steps=4, gen=torch.Generator().manual_seed(0))
        ref = torch.randn(2, 12, 10, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(mel[0], fd.mel_mean + fd.mel_std * ref[0], atol=1e-5) and mel[1, 8:].abs().sum() == 0
        # the prior's mu is in the normalised space; prior_mel gives it as log-mel
        _, mask, mu = fd.condition(tok, lens, torch.tensor([0, 1]))
        assert torch.allclose(fd.prior_mel(tok, lens, torch.tensor([0, 1])),
                              (mu * fd.mel_std + fd.mel_mean) * mask[..., None])
        with pytest.raises(ValueError, match=r"non-empty list of \(T, 10\) log-mels"):
            fd.fit_mel_stats([torch.zeros(5, 8)])
        with pytest.raises(ValueError, match="no mel normalisation"):
            FlowDecoder(n_codes=8, n_speakers=1, n_mels=10).fit_mel_stats(mels)
        with pytest.raises(ValueError, match="mel_norm_utts must be >= 0"):
            FlowDecoder(n_codes=8, n_speakers=1, mel_norm_utts=-1)

    def test_learns_a_token_to_mel_map(self):
        # each token stands for a fixed 10-bin spectrum; after training the ODE sample reproduces it
        torch.manual_seed(0)
        fd = FlowDecoder(n_codes=4, n_speakers=1, n_mels=10, d_model=32, n_blocks=2, up=2, cond_layers=1)
        table = torch.randn(4, 10)
        tok = torch.randint(0, 4, (8, 6), generator=torch.Generator().manual_seed(1))
        lens, spk = torch.full((8,), 6), torch.zeros(8, dtype=torch.long)
        mel = table[tok].repeat_interleave(2, 1)
        _train(fd, mel, tok, lens, spk)
        out, _ = fd.sample(tok, lens, spk, n_steps=10, gen=torch.Generator().manual_seed(3))
        # untrained: the sample is unit noise, error ~ 1 + 1 = 2 per bin; trained: measured 0.04
        assert float(((out - mel) ** 2).mean()) < 0.2

    def test_mel_prior_learns_a_speaker_dependent_map(self):
        # each (token, speaker) pair stands for its own spectrum: the prior's mu must see the
        # speaker to predict it, and the ODE sample (which reads mu) reproduces it
        torch.manual_seed(0)
        fd = FlowDecoder(n_codes=4, n_speakers=2, n_mels=10, d_model=32, n_blocks=2, up=2, cond_layers=1,
                         prior_weight=1.0)
        table, voice = torch.randn(4, 10), 2 * torch.randn(2, 10)
        g = torch.Generator().manual_seed(1)
        tok, spk = torch.randint(0, 4, (8, 6), generator=g), torch.arange(8) % 2
        lens = torch.full((8,), 6)
        mel = (table[tok] + voice[spk][:, None]).repeat_interleave(2, 1)
        _train(fd, mel, tok, lens, spk)
        with torch.no_grad():
            _, mask, mu = fd.condition(tok, lens, spk)
        assert mu.shape == mel.shape and bool((mask == 1).all())
        # the speaker offsets alone are ~4 per bin: a mu blind to the speaker cannot get near
        assert float(((mu - mel) ** 2).mean()) < 0.2
        out, _ = fd.sample(tok, lens, spk, n_steps=10, gen=torch.Generator().manual_seed(3))
        assert float(((out - mel) ** 2).mean()) < 0.3
        # the objective is CFM + prior_weight x the prior's MSE; the parts come apart for logging
        fd.prior_weight = 0.5
        terms = fd.loss_terms(mel, tok, lens, spk, torch.Generator().manual_seed(5))
        assert set(terms) == {"flow", "flow_cfm", "flow_prior"} and not terms["flow_prior"].requires_grad
        assert torch.allclose(terms["flow"], terms["flow_cfm"] + 0.5 * terms["flow_prior"])
        assert torch.allclose(terms["flow_prior"], ((mu - mel) ** 2).mean())
        assert torch.equal(fd.loss(mel, tok, lens, spk, torch.Generator().manual_seed(5)), terms["flow"])
        # the same map, on log-mel far from N(0, I) (offset 3, scale 0.3), with normalisation
        torch.manual_seed(0)
        fdn = FlowDecoder(n_codes=4, n_speakers=2, n_mels=10, d_model=32, n_blocks=2, up=2, cond_layers=1,
                          prior_weight=1.0, mel_norm_utts=8)
        far = 3 + 0.3 * mel
        fdn.fit_mel_stats(list(far))
        _train(fdn, far, tok, lens, spk)
        out, _ = fdn.sample(tok, lens, spk, n_steps=10, gen=torch.Generator().manual_seed(3))
        with torch.no_grad():
            assert float(((fdn.prior_mel(tok, lens, spk) - far) ** 2).mean()) < 0.2 * 0.09
        assert float(((out - far) ** 2).mean()) < 0.3 * 0.09
        with pytest.raises(ValueError, match="needs the speaker ids"):
            fd.condition(tok, lens)
        with pytest.raises(ValueError, match="prior_weight must be >= 0"):
            FlowDecoder(n_codes=4, n_speakers=1, prior_weight=-1)


def test_griffin_lim_inverts_logmel():
    sr = 16000
    t = torch.arange(sr) / sr
    wav = 0.3 * torch.sin(2 * torch.pi * (200 * t + 300 * t ** 2)) + 0.1 * torch.sin(2 * torch.pi * 1500 * t)
    mel = LogMel()(wav)
    out = GriffinLimVocoder(n_iter=32)(mel)
    assert out.shape == ((mel.shape[0] - 1) * 160,)
    back = LogMel()(out)
    n = min(back.shape[0], mel.shape[0])
    # the re-analysed log-mel matches the input (LogMel units: 1.0 = 4 decades); frames away from the edges
    assert float((back[2:n - 2] - mel[2:n - 2]).abs().mean()) < 0.08


class TestTokenASR:
    def test_soft_inputs_match_ids_and_carry_gradient(self):
        torch.manual_seed(0)
        asr = TokenASR(8, CharTokenizer(), d_model=32, n_layers=1, dropout=0.0)
        tok, lens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 1, 0, 0]]), torch.tensor([5, 3])
        lp_ids = asr.log_p_text(tok, lens, ["ab", "c"])
        onehot = torch.nn.functional.one_hot(tok, 8).float().requires_grad_()
        lp_soft = asr.log_p_text(onehot, lens, ["ab", "c"])
        assert torch.allclose(lp_ids, lp_soft, atol=1e-5) and bool((lp_ids < 0).all())
        lp_soft.sum().backward()
        assert onehot.grad.abs().sum() > 0 and onehot.grad[1, 3:].abs().sum() == 0   # padding gets none
        with pytest.raises(ValueError, match=r"\(B, T, 8\) probabilities"):
            asr(torch.zeros(1, 3, 5), torch.tensor([3]))

    def test_learns_to_read_tokens(self):
        # toy tokens: code = letter index (a..h), one code per letter, doubled in time
        torch.manual_seed(0)
        tk = CharTokenizer()
        asr = TokenASR(8, tk, d_model=48, n_layers=2, dropout=0.0)
        words = ["bad", "cab", "head", "face", "bead", "dab", "hag", "egg"]
        tok = [torch.tensor([ord(c) - 97 for c in w]).repeat_interleave(2) for w in words]
        lens = torch.tensor([len(t) for t in tok])
        x = torch.nn.utils.rnn.pad_sequence(tok, batch_first=True)
        opt = torch.optim.Adam(asr.parameters(), 3e-3)
        for _ in range(150):
            loss = -asr.log_p_text(x, lens, words).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert asr.transcribe(x, lens) == words


def test_token_asr_marks_unalignable_texts_without_nan_gradients():
    torch.manual_seed(0)
    asr = TokenASR(8, CharTokenizer(), d_model=32, n_layers=1, dropout=0.0, up=1)
    x = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3], [1, 2, 3]]), 8).float().requires_grad_()
    # 3 frames: "abc" fits, "aab" needs a blank between the a's (4 frames) and cannot align
    lp = asr.log_p_text(x, torch.tensor([3, 3]), ["abc", "aab"])
    assert torch.isfinite(lp[0]) and lp[1] == float("-inf")
    torch.where(torch.isfinite(lp), lp, torch.zeros_like(lp)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0
