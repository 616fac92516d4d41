"""Molecule-captioning metrics exactly as MolT5 computes them (blender-nlp/MolT5 `text_translation_metrics.py`).

- BLEU-2/4: nltk `corpus_bleu` (no smoothing) over SciBERT-uncased WordPiece tokens, one reference per sample.
- METEOR: nltk `meteor_score([gt_tokens], out_tokens)` on the same tokens, averaged over samples (WordNet 3.0).
- ROUGE-1/2/L: `rouge_score` F-measure on the raw strings (its own tokenizer, no stemmer), averaged over samples.

Tokens: the text truncated to 512 WordPiece tokens, then `[PAD]`, `[CLS]` and `[SEP]` dropped (MolT5 tokenizes
with padding to 512 and filters those three). A prediction starting with "[CLS] " loses that prefix first, as in
MolT5's reader. Empty predictions score like any other (no tokens: no BLEU matches, METEOR 0, ROUGE 0).
All scores are reported x100. Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[3]
BUNDLED_VOCAB = REPO_ROOT / "data" / "scibert_vocab" / "vocab.txt"
SHARED_VOCAB = REPO_ROOT.parent / "shared" / "data" / "scibert_vocab" / "vocab.txt"
MAX_LENGTH = 512  # MolT5's --text_trunc_length
DROPPED_TOKENS = frozenset({"[PAD]", "[CLS]", "[SEP]"})


@dataclass(frozen=True)
class CaptionScores:
    """MolT5's six caption metrics (x100) and the number of scored rows; meteor is None when not computed."""

    rows: int
    bleu2: float
    bleu4: float
    rouge1: float
    rouge2: float
    rougeL: float
    meteor: Optional[float]

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_vocab(vocab_file: Optional[str | Path] = None) -> Path:
    """The SciBERT vocab.txt: the given path, else the copy bundled in data/, else ../shared/data's."""
    if vocab_file is not None:
        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"vocab_file: {path} not found (SciBERT scivocab-uncased vocab.txt)")
        return path
    for path in (BUNDLED_VOCAB, SHARED_VOCAB):
        if path.is_file():
            return path
    raise FileNotFoundError(f"vocab_file: SciBERT vocab.txt not found at {BUNDLED_VOCAB} or {SHARED_VOCAB}")


@lru_cache(maxsize=4)
def load_tokenizer(vocab_file: Optional[str] = None):
    """SciBERT's uncased WordPiece tokenizer (transformers BertTokenizerFast, lowercasing, accents stripped)."""
    from transformers import BertTokenizerFast

    path = resolve_vocab(vocab_file)
    n_entries = sum(1 for _ in path.open(encoding="utf-8"))
    # from_pretrained(folder) loads a vocab.txt on transformers 4 and 5 alike (v5 ignores vocab_file=...). The
    # folder holds only that file, so no tokenizer.json or config lying beside the vocab can take over.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / "vocab.txt")
        tokenizer = BertTokenizerFast.from_pretrained(tmp, do_lower_case=True)
    if len(tokenizer.get_vocab()) != n_entries:
        raise ValueError(f"vocab_file: {path} has {n_entries} entries but the tokenizer loaded "
                         f"{len(tokenizer.get_vocab())}")
    return tokenizer


def caption_tokens(texts: Sequence[str], vocab_file: Optional[str] = None,
                   max_length: int = MAX_LENGTH) -> list[list[str]]:
    """MolT5's tokens per text: WordPiece, truncated to max_length, [PAD]/[CLS]/[SEP] removed.

    One batched call; equals MolT5's per-text `tokenizer.tokenize(t, truncation=True, max_length=512,
    padding='max_length')` then filtering (tested). Padding only adds [PAD]s that are filtered, so it is left out.
    """
    tokenizer = load_tokenizer(None if vocab_file is None else str(vocab_file))
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)
    return [[t for t in tokenizer.convert_ids_to_tokens(ids) if t not in DROPPED_TOKENS]
            for ids in encoded["input_ids"]]


def strip_cls_prefix(prediction: str) -> str:
    """MolT5's reader drops a leading "[CLS] " that some decoders emit."""
    return prediction[6:] if prediction.startswith("[CLS] ") else prediction


def bleu(references: Sequence[list[str]], hypotheses: Sequence[list[str]]) -> tuple[float, float]:
    """Corpus BLEU-2 and BLEU-4 (x100), nltk, no smoothing, one reference token list per hypothesis."""
    from nltk.translate.bleu_score import corpus_bleu

    refs = [[r] for r in references]
    with warnings.catch_warnings():
        # nltk warns when an n-gram order has no match (it then scores ~0, as in MolT5); the score is what counts.
        warnings.filterwarnings("ignore", message=r"\s*The hypothesis contains 0 counts", category=UserWarning)
        # Both weightings in one pass over the corpus (nltk >= 3.8): the same counts, half the time.
        bleu2, bleu4 = corpus_bleu(refs, hypotheses, weights=[(0.5, 0.5), (0.25, 0.25, 0.25, 0.25)])
    return 100 * bleu2, 100 * bleu4


def meteor(references: Sequence[list[str]], hypotheses: Sequence[list[str]], wordnet=None) -> float:
    """Mean per-sample nltk METEOR (x100) on token lists; needs WordNet 3.0 (see momu.caption.wordnet)."""
    from nltk.translate.meteor_score import meteor_score

    from momu.caption.wordnet import load_wordnet

    wordnet = wordnet if wordnet is not None else load_wordnet()
    scores = [meteor_score([r], h, wordnet=wordnet) for r, h in zip(references, hypotheses)]
    return 100 * sum(scores) / len(scores) if scores else 0.0


def rouge(references: Sequence[str], predictions: Sequence[str]) -> tuple[float, float, float]:
    """Mean ROUGE-1, ROUGE-2, ROUGE-L F-measure (x100), rouge_score without stemmer, on the raw strings."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    # MolT5 calls score(out, gt), i.e. with target and prediction swapped; F-measure is symmetric in them.
    totals = [0.0, 0.0, 0.0]
    for ref, pred in zip(references, predictions):
        result = scorer.score(ref, pred)
        for i, key in enumerate(("rouge1", "rouge2", "rougeL")):
            totals[i] += result[key].fmeasure
    n = max(len(references), 1)
    return tuple(100 * t / n for t in totals)


def score_captions(references: Sequence[str], predictions: Sequence[str], *, vocab_file: Optional[str] = None,
                   max_length: int = MAX_LENGTH, with_meteor: bool = True) -> CaptionScores:
    """Score predicted captions against ground truth (same order) with MolT5's recipe; scores x100.

    with_meteor=False skips METEOR (reported as None); with it, a missing WordNet raises WordNetMissingError.
    """
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("no captions to score")
    for name, texts in (("references", references), ("predictions", predictions)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] is {type(texts[bad]).__name__}, not a string")
    if with_meteor:
        from momu.caption.wordnet import load_wordnet

        wordnet = load_wordnet()  # fail before the work when WordNet is missing
    predictions = [strip_cls_prefix(p) for p in predictions]
    ref_tokens = caption_tokens(references, vocab_file, max_length)
    out_tokens = caption_tokens(predictions, vocab_file, max_length)
    bleu2, bleu4 = bleu(ref_tokens, out_tokens)
    rouge1, rouge2, rouge_l = rouge(references, predictions)
    return CaptionScores(rows=len(references), bleu2=bleu2, bleu4=bleu4, rouge1=rouge1, rouge2=rouge2,
                         rougeL=rouge_l, meteor=meteor(ref_tokens, out_tokens, wordnet) if with_meteor else None)
