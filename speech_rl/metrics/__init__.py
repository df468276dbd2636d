from speech_rl.metrics.text import TextNormalizer, WordErrors, keyword_counts, longest_ngram_run, ngram_loop, word_errors
from speech_rl.metrics.asr import ASRErrorRates, PerSetErrorRates, val_set_names

__all__ = ["TextNormalizer", "WordErrors", "word_errors", "keyword_counts", "longest_ngram_run", "ngram_loop", "ASRErrorRates", "PerSetErrorRates",
           "val_set_names"]
