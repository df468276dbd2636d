from speech_rl.metrics.text import (NORMALIZERS, TextNormalizer, WhisperNormalizer, WordErrors, keyword_counts,
                                    longest_ngram_run, make_normalizer, ngram_loop, word_errors)
from speech_rl.metrics.asr import ASRErrorRates, PerSetErrorRates, val_set_names

__all__ = ["NORMALIZERS", "TextNormalizer", "WhisperNormalizer", "make_normalizer", "WordErrors", "word_errors",
           "keyword_counts", "longest_ngram_run", "ngram_loop", "ASRErrorRates", "PerSetErrorRates", "val_set_names"]
