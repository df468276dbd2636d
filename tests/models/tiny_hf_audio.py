"""Tiny, randomly initialised Hugging Face audio LLMs built from transformers' own config
classes and saved with ``save_pretrained``, loaded back the way a user's checkpoint loads (no
download): Qwen2-Audio, Qwen3-ASR and the Qwen2.5-Omni thinker, with a byte-level BPE tokenizer holding each family's
special tokens (so it spells any text)."""
from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>",
            "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>", "<asr_text>", "<|en|>"]
TEXT = ["meet grace at the apex store in cairo", "priya and ingrid will meet near the adidas shop",
        "the quick brown fox jumps over the lazy dog", "language English", "detect the language and recognize "
        "the speech", "transcribe what you hear"]
# head_dim 32: vLLM's CPU attention takes head sizes of 32 and up
# initializer_range 0.2 (not 0.02): a random LM whose greedy transcripts vary with the audio
TEXT_SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=128, max_position_embeddings=2048, initializer_range=0.2)


def save_tokenizer(folder: Path) -> "object":
    """A byte-level BPE (256 bytes + merges learnt on a few sentences) with the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 4, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def save_qwen2_audio(folder: Path, n_mels: int = 128, seed: int = 0) -> Path:
    """A tiny ``Qwen2AudioForConditionalGeneration`` (tower 64 x 2 layers, window 10 s)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tok = save_tokenizer(folder)
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=n_mels, encoder_layers=2,
                          encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64, max_source_positions=500),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), tie_word_embeddings=False, **TEXT_SIZE),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"), initializer_range=0.2)
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def save_qwen3_asr(folder: Path, n_mels: int = 128, seed: int = 0) -> Path:
    """A tiny ``Qwen3ASRForConditionalGeneration`` (tower 64 x 2 layers, chunks of 1 s)."""
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    tok = save_tokenizer(folder)
    cfg = Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=n_mels, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          d_model=64, output_dim=TEXT_SIZE["hidden_size"], downsample_hidden_size=16),
        text_config=dict(model_type="qwen3", vocab_size=len(tok), head_dim=32, tie_word_embeddings=True,
                         **TEXT_SIZE),
        audio_token_id=tok.convert_tokens_to_ids("<|audio_pad|>"), pad_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), initializer_range=0.2)
    torch.manual_seed(seed)
    Qwen3ASRForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def save_qwen2_5_omni(folder: Path, n_mels: int = 128, seed: int = 0) -> Path:
    """A tiny ``Qwen2_5OmniThinkerForConditionalGeneration`` (audio tower 64 x 2 layers, a
    one-block vision tower it carries along, Qwen2-shaped text model with M-RoPE)."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    tok = save_tokenizer(folder)
    text = dict(TEXT_SIZE, vocab_size=len(tok), tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=n_mels, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          d_model=64, output_dim=TEXT_SIZE["hidden_size"], n_window=50),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=TEXT_SIZE["hidden_size"], fullatt_block_indexes=[0]),
        text_config=text, audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"), initializer_range=0.2,
        audio_start_token_id=tok.convert_tokens_to_ids("<|audio_bos|>"),
        audio_end_token_id=tok.convert_tokens_to_ids("<|audio_eos|>"),
        vision_start_token_id=len(tok))      # no vision input here; a real thinker's config names it
    torch.manual_seed(seed)
    Qwen2_5OmniThinkerForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


SAVERS = {"qwen2_audio": save_qwen2_audio, "qwen3_asr": save_qwen3_asr, "qwen2_5_omni": save_qwen2_5_omni}


def save_whisper_and_lm(folder: Path, n_mels: int = 80, seed: int = 0) -> tuple[Path, Path]:
    """SLAM-LLM style parts: a tiny HF ``WhisperModel`` folder (its encoder is used) and a tiny
    ``Qwen2ForCausalLM`` folder with the tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperModel

    whisper, lm = folder / "whisper", folder / "lm"
    torch.manual_seed(seed)
    WhisperModel(WhisperConfig(num_mel_bins=n_mels, d_model=64, encoder_layers=2, encoder_attention_heads=2,
                               encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                               max_source_positions=500, max_target_positions=64, vocab_size=64, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, decoder_start_token_id=0)
                 ).save_pretrained(whisper)
    tok = save_tokenizer(lm)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), tie_word_embeddings=True, **TEXT_SIZE)).save_pretrained(lm)
    return whisper, lm


def save_cosyvoice2_lm(folder: Path, n_speech: int = 32, seed: int = 0) -> Path:
    """A tiny causal LM in CosyVoice2's HF layout: Qwen2 over text tokens + ``<|s_0|>`` ...
    speech tokens + ``<|sos|>``, ``<|task_id|>`` and three EOS tokens, an untied LM head with a
    bias (saved as ``lm_head.bias``, which ``Qwen2ForCausalLM`` itself has no place for)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|sos|>", "<|task_id|>", "<|eos1|>", "<|eos2|>", "<|eos3|>"] + \
        [f"<|s_{k}|>" for k in range(n_speech)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 4, trainers.BpeTrainer(vocab_size=320 + n_speech, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(fast), tie_word_embeddings=False, **TEXT_SIZE))
    head = torch.nn.Linear(TEXT_SIZE["hidden_size"], len(fast), bias=True)
    with torch.no_grad():
        head.weight.copy_(lm.lm_head.weight)
        head.bias.normal_(0.0, 0.5)
    lm.lm_head = head
    lm.save_pretrained(folder)
    return folder
