"""Molecule captioning: MolT5's caption metrics (BLEU-2/4, ROUGE-1/2/L, METEOR) and `momu evaluate caption`.

Pure Python (transformers' tokenizer, nltk, rouge_score); no torch or Ray needed to score captions.
"""

from momu.caption.metrics import CaptionScores, caption_tokens, score_captions
from momu.caption.predictions import CaptionPredictions, read_predictions

__all__ = ["CaptionPredictions", "CaptionScores", "caption_tokens", "read_predictions", "score_captions"]
