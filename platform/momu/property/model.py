"""Property prediction model: the MoMu GIN + mean pooling + (dropout) + one linear layer, one logit per task.

Initialisation (`PropertyModelSection.init`):
- "random": a fresh GIN built from `model.graph` (default: 5 x 300, dropout 0.5, pretrain-gnns featurization).
- a saved MoMu model (directory or `models:/` / `runs:/` URI): a MoMu dual encoder or a graph-only (graphcl) one,
  both saved by `MoMu.save_pretrained`. Only its GIN weights are read (the text tower is never built); layer count,
  width and JK mode come from it, dropout from `model.graph`.

Featurization and a pretrained GIN. MoMu pretrained its GIN on OGB features (second bond column = bond stereo,
self-loops with attribute (0, 0)); MoMu's property finetuning ran the pretrain-gnns pipeline instead (bond
direction, self-loops (4, 0)) on the same weights. `features_from: config` (the default) reproduces that recipe:
the finetuning graphs use bond direction and self-loop type 4. Two details make the hand-over exact where it can be:
- the self-loop message: the pretrained GIN added bond-type row p (its self_loop_bond_type) to every self-loop; its
  row p is copied into row 4 (the finetuning self-loop type) of every layer, so before the first update the encoder
  computes exactly the pretrained function on any molecule without directional bonds. Row p itself is left as it
  was (it is also the single-bond row when p = 0), and the two rows then train independently.
- the second bond column: row 0 means "none" in both vocabularies, which covers every bond except those next to a
  stereo double bond; rows 1-2 (stereo Z/E in pretraining, direction up/down here) are reused as MoMu's code did.
`features_from: init` keeps the pretrained model's own featurization instead (no mismatch at all, but not MoMu's
finetuning recipe).

A finetuned model saves as a directory: `property_model.json` (GIN config, tasks, task type, label scaling,
provenance) + `model.safetensors`. Pure torch: no Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from momu.config import GINConfig
from momu.property.config import PropertyModelSection
from momu.models.gin import GIN, GraphEncoder

PROPERTY_CONFIG_FILE = "property_model.json"
PROPERTY_WEIGHTS_FILE = "model.safetensors"
PROPERTY_FORMAT_VERSION = 1
FINETUNE_SELF_LOOP_BOND_TYPE = 4


class PropertyModel(nn.Module):
    """GIN -> mean pool -> dropout -> Linear(out_dim, num_tasks). forward(batch) -> logits [B, num_tasks]."""

    def __init__(self, graph: GINConfig, num_tasks: int, head_dropout: float = 0.0):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.graph_config = graph
        self.num_tasks = num_tasks
        self.encoder = GraphEncoder(GIN(graph.num_layers, graph.emb_dim, graph.dropout, graph.jk,
                                        graph.self_loop_bond_type))
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.out_dim, num_tasks)

    @property
    def bond_feature(self) -> str:
        return self.graph_config.bond_feature

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(batch)))


# -- pretrained GIN weights -------------------------------------------------------------------------------------

def read_pretrained_gin(source: str | Path) -> tuple[GINConfig, dict[str, torch.Tensor], Path]:
    """(GIN config, GIN state dict for `GraphEncoder`, model directory) of a saved MoMu model, reading only the
    graph tower's tensors from its safetensors file."""
    from momu.models.loading import resolve_model_dir
    from momu.models.momu import CONFIG_FILE, WEIGHTS_FILE

    directory = resolve_model_dir(source)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"model.init: {directory} is not a saved MoMu model (needs {CONFIG_FILE} and "
                                f"{WEIGHTS_FILE})")
    payload = json.loads(config_path.read_text())
    model_config = payload.get("config", {})
    if model_config.get("graph_encoder", "gin") != "gin":
        raise ValueError(f"model.init: {directory} has a {model_config.get('graph_encoder')!r} graph tower; "
                         "property finetuning needs a GIN")
    graph = GINConfig.model_validate(model_config.get("graph", {}))
    prefix = "graph_encoder."
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            if key.startswith(prefix):
                state[key[len(prefix):]] = handle.get_tensor(key)
    if not state:
        raise ValueError(f"model.init: {weights_path} holds no graph_encoder.* weights")
    return graph, state, directory


def build_property_model(section: PropertyModelSection, num_tasks: int) -> tuple[PropertyModel, dict]:
    """A PropertyModel initialised as `section.init` says, and a provenance dict (logged with the run)."""
    if section.init == "random":
        model = PropertyModel(section.graph, num_tasks, section.head_dropout)
        return model, {"init": "random", "graph": section.graph.model_dump()}

    pretrained, state, directory = read_pretrained_gin(section.init)
    if section.features_from == "init":
        bond_feature, self_loop = pretrained.bond_feature, pretrained.self_loop_bond_type
    else:
        bond_feature, self_loop = section.graph.bond_feature, section.graph.self_loop_bond_type
    graph = GINConfig(num_layers=pretrained.num_layers, emb_dim=pretrained.emb_dim, jk=pretrained.jk,
                      dropout=section.graph.dropout, self_loop_bond_type=self_loop, bond_feature=bond_feature)
    model = PropertyModel(graph, num_tasks, section.head_dropout)
    model.encoder.load_state_dict(state, strict=True)
    copied_self_loop = False
    if self_loop != pretrained.self_loop_bond_type:
        with torch.no_grad():
            for conv in model.encoder.gin.gnns:
                conv.edge_embedding1.weight[self_loop] = conv.edge_embedding1.weight[pretrained.self_loop_bond_type]
        copied_self_loop = True
    info = {
        "init": str(section.init),
        "init_dir": str(directory),
        "pretrained_graph": pretrained.model_dump(),
        "graph": graph.model_dump(),
        "features_from": section.features_from,
        "self_loop_row_copied": copied_self_loop,
        "bond_feature_changed": bond_feature != pretrained.bond_feature,
    }
    return model, info


# -- persistence ------------------------------------------------------------------------------------------------

def save_property_model(model: PropertyModel, directory: str | Path, task_names: Sequence[str], task_type: str,
                        label_mean: Optional[Sequence[float]] = None, label_std: Optional[Sequence[float]] = None,
                        extra: Optional[dict] = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / PROPERTY_WEIGHTS_FILE), metadata={"format": "momu-property"})
    payload = {
        "format_version": PROPERTY_FORMAT_VERSION,
        "graph": model.graph_config.model_dump(mode="json"),
        "num_tasks": model.num_tasks,
        "head_dropout": float(model.dropout.p),
        "task_names": list(task_names),
        "task_type": task_type,
        "label_mean": None if label_mean is None else [float(v) for v in label_mean],
        "label_std": None if label_std is None else [float(v) for v in label_std],
        **({"provenance": extra} if extra else {}),
    }
    (directory / PROPERTY_CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return directory


class LoadedPropertyModel:
    """A finetuned model with what prediction needs: task names, task type, label scaling."""

    def __init__(self, model: PropertyModel, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.task_names: list[str] = list(meta["task_names"])
        self.task_type: str = meta["task_type"]
        self.label_mean = torch.tensor(meta["label_mean"]) if meta.get("label_mean") else None
        self.label_std = torch.tensor(meta["label_std"]) if meta.get("label_std") else None

    @torch.no_grad()
    def predict_batch(self, batch) -> torch.Tensor:
        """Probabilities (classification) or values in label units (regression), [B, num_tasks]."""
        out = self.model(batch).float()
        if self.task_type == "classification":
            return torch.sigmoid(out)
        if self.label_std is not None:
            out = out * self.label_std + self.label_mean
        return out


def resolve_property_model_dir(source: str | Path) -> Path:
    """A local finetuned-model directory; MLflow artifact URIs (runs:/<id>/model, models:/...) are downloaded."""
    text = str(source)
    if "://" in text or text.startswith(("runs:/", "models:/")):
        import mlflow

        from momu.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri())
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
        for candidate in (local, *local.rglob(PROPERTY_CONFIG_FILE)):
            candidate = candidate.parent if candidate.name == PROPERTY_CONFIG_FILE else candidate
            if (candidate / PROPERTY_CONFIG_FILE).is_file():
                return candidate
        raise FileNotFoundError(f"{text} downloaded to {local} but holds no finetuned property model")
    path = Path(text)
    if not (path / PROPERTY_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a finetuned property model (no {PROPERTY_CONFIG_FILE}; "
                                "`momu finetune property` writes one under <output_dir>/model)")
    return path


def load_property_model(source: str | Path, map_location: str = "cpu") -> LoadedPropertyModel:
    directory = resolve_property_model_dir(source)
    meta = json.loads((directory / PROPERTY_CONFIG_FILE).read_text())
    if meta.get("format_version") != PROPERTY_FORMAT_VERSION:
        raise ValueError(f"{directory}: unsupported property model format {meta.get('format_version')!r}")
    model = PropertyModel(GINConfig.model_validate(meta["graph"]), int(meta["num_tasks"]),
                          float(meta.get("head_dropout", 0.0)))
    load_model(model, str(directory / PROPERTY_WEIGHTS_FILE), strict=True, device=str(map_location))
    return LoadedPropertyModel(model, meta)
