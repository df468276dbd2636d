from speech_rl.metrics.text import TextNormalizer, WordErrors, word_errors, keyword_counts
from speech_rl.metrics.asr import ASRErrorRates, PerSetErrorRates, val_set_names

__all__ = ["TextNormalizer", "WordErrors", "word_errors", "keyword_counts", "ASRErrorRates", "PerSetErrorRates",
           "val_set_names"]
