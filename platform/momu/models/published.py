"""Checkpoints shipped with the package, so retrieval, embedding, serving, captioning and generation work right
after install without training first.

A published checkpoint is a small directory under `momu/checkpoints/<name>/`: `config.json` (the MoMu config, with
`"text_weights": "bundled"`), `model.safetensors` (graph tower + both projection heads, fp16; the bundled text tower
is referenced by name, not copied) and `MODEL_CARD.md` (data and what was removed, steps, time, metrics, licences).
Anything that takes a model path also takes a published name (`MoMu.from_pretrained("momu-cpu")`,
`--model momu-cpu`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
CARD_FILE = "MODEL_CARD.md"
from momu.config import DEFAULT_MODEL  # noqa: F401  (the default of every job that needs a trained MoMu)
from momu.files import chmod_like_umask


def published_names() -> list[str]:
    """Names of the checkpoints shipped with this installation."""
    if not PUBLISHED_DIR.is_dir():
        return []
    return sorted(p.name for p in PUBLISHED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_published(source: str | Path) -> Path:
    """`source` as a path when it exists; else the shipped checkpoint of that name; else the path unchanged (the
    caller reports it missing)."""
    path = Path(source)
    if path.exists() or "/" in str(source) or "\\" in str(source):
        return path
    candidate = PUBLISHED_DIR / str(source)
    return candidate if (candidate / "config.json").is_file() else path


def export_published(model, out_dir: str | Path, card: str, dtype: str = "float16",
                     metadata: Optional[dict] = None) -> Path:
    """Write `model` (a MoMu whose text tower is the unchanged bundled encoder) as a published checkpoint: the
    graph tower and heads in `dtype`, the config, and the model card text. Refuses a model whose text tower was
    trained (its weights would be silently replaced by the bundled ones on load)."""
    from momu.config import BUNDLED_TEXT_ENCODER
    from momu.models.momu import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, MoMu

    if model.config.text.name_or_path != BUNDLED_TEXT_ENCODER:
        raise ValueError(f"only models with the bundled text tower ({BUNDLED_TEXT_ENCODER}) can be published "
                         f"without their text weights; this one uses {model.config.text.name_or_path!r}")
    reference = MoMu(model.config).text_encoder.state_dict()
    for key, value in model.text_encoder.state_dict().items():
        if not torch.equal(value.float().cpu(), reference[key].float()):
            raise ValueError(f"the text tower was trained (text_encoder.{key} differs from the bundled weights); "
                             "publish it as a full saved model instead")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = {k: (v.to(torch_dtype) if v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "momu-published", "dtype": dtype,
                                                        "version": str(FORMAT_VERSION)})
    chmod_like_umask(out / WEIGHTS_FILE)
    payload = {"format_version": FORMAT_VERSION, "text_weights": "bundled", "dtype": dtype,
               "config": model.config.model_dump(mode="json"), **({"published": metadata} if metadata else {})}
    (out / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    (out / CARD_FILE).write_text(card.rstrip() + "\n")
    return out
