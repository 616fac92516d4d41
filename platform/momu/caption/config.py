"""Config of caption scoring (`momu evaluate caption`)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from momu.config import StrictModel


class CaptionMetricsConfig(StrictModel):
    """How captions are scored; the defaults are MolT5's recipe."""

    vocab_file: Optional[str] = Field(
        None, description="SciBERT scivocab-uncased vocab.txt for BLEU/METEOR tokens "
                          "(default: the bundled data/scibert_vocab/vocab.txt, else ../shared/data/scibert_vocab/)")
    max_length: int = Field(512, ge=1, description="WordPiece tokens kept per caption (MolT5: 512)")
    meteor: bool = Field(True, description="compute METEOR (needs WordNet 3.0: run .ci/install-wordnet)")
