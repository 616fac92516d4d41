"""Pure pieces of contrastive training shared by the Ray Train job: batch collation with per-epoch views, the
DDP-friendly forward module and the objective. No Ray imports.

A training batch arrives as Arrow columns: the graph columns (momu.chem.columns) plus, per text mode,
`text_input_ids` (list<list<int32>>: every paragraph's token ids), `text_features` (list<list<float32>>: every
paragraph's pooled text-tower features; locked) or `text_hidden` (list<list<fixed_size_list[H]>>: every
paragraph's [tokens, H] hidden states below the trained top layers; partial). The collator draws two augmented graph views and two paragraphs per
molecule with an RNG keyed by (seed, epoch, rank, batch index): views differ between epochs, and a run resumed
mid-epoch redraws exactly the views the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from momu.chem.augment import augment_pyg_batch
from momu.chem.columns import columns_to_pyg_batch
from momu.losses import info_nce, momu_contrastive_loss, vse_max_violation_loss
from momu.models.fingerprint import FINGERPRINT_COLUMN, attach_fingerprints
from momu.models.momu import MoMu

# cached features [B, H] (locked), {"input_ids", "attention_mask"} (two-tower modes) or {"hidden",
# "attention_mask"} (partial: cached lower-layer hidden states [B, T, H], zero-padded).
TextInput = Union[torch.Tensor, dict]
TEXT_COLUMNS = {"locked": "text_features", "partial": "text_hidden"}


def text_column(text_mode: str) -> str:
    """The batch column a text mode reads its text inputs from."""
    return TEXT_COLUMNS.get(text_mode, "text_input_ids")


@dataclasses.dataclass
class ContrastiveInputs:
    view1: object  # PyG Batch
    view2: object
    text1: Optional[TextInput] = None
    text2: Optional[TextInput] = None

    @property
    def batch_size(self) -> int:
        return int(self.view1.num_graphs)

    def to(self, device: torch.device | str) -> "ContrastiveInputs":
        def move(x):
            if x is None:
                return None
            if isinstance(x, dict):
                return {k: v.to(device, non_blocking=True) for k, v in x.items()}
            return x.to(device)

        return ContrastiveInputs(move(self.view1), move(self.view2), move(self.text1), move(self.text2))


def _list_of_lists(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(row -> first paragraph index offsets, flat paragraph list array) of a list<list<T>> column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    outer = column.offsets.to_numpy()
    outer = outer - outer[0]  # sliced arrays keep offsets into the parent
    return outer, column.flatten()


def choose_two_paragraphs(counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per row, two different paragraph positions when the row has >= 2, else position 0 twice."""
    first = np.zeros(len(counts), dtype=np.int64)
    second = np.zeros(len(counts), dtype=np.int64)
    many = np.flatnonzero(counts >= 2)
    if len(many):
        a = (rng.random(len(many)) * counts[many]).astype(np.int64)
        b = (rng.random(len(many)) * (counts[many] - 1)).astype(np.int64)
        b = b + (b >= a)  # uniform over the other paragraphs
        first[many], second[many] = a, b
    if np.any(counts < 1):
        raise ValueError("a training row has no text")
    return first, second


def graph_batch_from_columns(batch: pa.Table, bond_feature: str, fingerprint_bits: Optional[int] = None):
    """Graph columns -> PyG Batch; with `fingerprint_bits` (the fingerprint baseline's n_bits) the batch also
    carries `fingerprint` [graphs, n_bits] made from the `fingerprint_bits` column."""
    graphs = columns_to_pyg_batch(batch, bond_feature)
    if fingerprint_bits:
        if FINGERPRINT_COLUMN not in batch.column_names:
            raise ValueError(f"the fingerprint model needs a '{FINGERPRINT_COLUMN}' column (featurize_records "
                             "with fingerprint=...)")
        offsets, flat = _list_of_lists(batch.column(FINGERPRINT_COLUMN))
        values = flat.to_numpy(zero_copy_only=False)
        attach_fingerprints(graphs, [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])], fingerprint_bits)
    return graphs


class ContrastiveCollator:
    """Arrow batch -> ContrastiveInputs (two augmented graph views, two text views; objective "vse": one graph
    view and one text view, the second ones left empty)."""

    def __init__(self, *, seed: int, rank: int, objective: str, text_mode: str, bond_feature: str,
                 augment1: str, augment2: str, drop_ratio: float, subgraph_ratio: float, pad_token_id: int = 0,
                 fingerprint_bits: Optional[int] = None):
        self.seed, self.rank, self.objective, self.text_mode = seed, rank, objective, text_mode
        self.bond_feature, self.augment1, self.augment2 = bond_feature, augment1, augment2
        self.ratios = {"drop_nodes": drop_ratio, "subgraph": subgraph_ratio}
        self.pad_token_id = pad_token_id
        self.fingerprint_bits = fingerprint_bits

    @classmethod
    def for_config(cls, cfg, rank: int, text_mode: str, pad_token_id: int = 0) -> "ContrastiveCollator":
        """The collator a PretrainConfig's run uses on `rank` (augmentations, objective, bond feature)."""
        return cls(seed=cfg.seed, rank=rank, objective=cfg.objective, text_mode=text_mode,
                   bond_feature=cfg.model.graph.bond_feature, augment1=cfg.augment1, augment2=cfg.augment2,
                   drop_ratio=cfg.drop_ratio, subgraph_ratio=cfg.subgraph_ratio, pad_token_id=pad_token_id,
                   fingerprint_bits=cfg.model.fingerprint.n_bits if cfg.model.graph_encoder == "fingerprint" else None)

    def rng(self, epoch: int, batch_index: int) -> np.random.Generator:
        # epoch -1 is validation's fixed views; SeedSequence entropy must be non-negative.
        return np.random.default_rng([self.seed, epoch + 1, self.rank, batch_index])

    def __call__(self, batch: pa.Table, epoch: int, batch_index: int) -> ContrastiveInputs:
        rng = self.rng(epoch, batch_index)
        graphs = graph_batch_from_columns(batch, self.bond_feature, self.fingerprint_bits)
        view1 = augment_pyg_batch(graphs, self.augment1, rng, ratio=self.ratios.get(self.augment1))
        if self.objective == "vse":  # one graph view, one text per molecule
            column = text_column(self.text_mode)
            offsets, paragraphs = _list_of_lists(batch.column(column))
            first, _ = choose_two_paragraphs(np.diff(offsets), rng)
            return ContrastiveInputs(view1, view1, self.text_view(paragraphs, offsets[:-1] + first))
        view2 = augment_pyg_batch(graphs, self.augment2, rng, ratio=self.ratios.get(self.augment2))
        if self.objective == "graphcl":
            return ContrastiveInputs(view1, view2)
        column = text_column(self.text_mode)
        offsets, paragraphs = _list_of_lists(batch.column(column))
        first, second = choose_two_paragraphs(np.diff(offsets), rng)
        text1 = self.text_view(paragraphs, offsets[:-1] + first)
        text2 = self.text_view(paragraphs, offsets[:-1] + second)
        return ContrastiveInputs(view1, view2, text1, text2)

    def text_view(self, paragraphs: pa.Array, indices: np.ndarray) -> TextInput:
        chosen = paragraphs.take(pa.array(indices))
        if self.text_mode == "locked":
            return first_paragraph_features(chosen)
        if self.text_mode == "partial":
            return pad_hidden_states(chosen)
        return pad_token_ids(chosen, self.pad_token_id)


def first_paragraph_features(paragraph_features: pa.Array) -> torch.Tensor:
    """list<float32> array (one vector per row) -> float32 tensor [rows, H]."""
    rows = len(paragraph_features)
    flat = paragraph_features.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return torch.from_numpy(flat.reshape(rows, -1).copy())


def pad_hidden_states(paragraphs: pa.Array) -> dict:
    """list<fixed_size_list<float>[H]> array (one [tokens, H] matrix per row) -> {"hidden": float32 [rows, T, H]
    zero-padded to the longest row, "attention_mask": [rows, T]}."""
    width = paragraphs.type.value_type.list_size
    values = paragraphs.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    hidden, mask = _pad_rows(np.diff(paragraphs.offsets.to_numpy()), values, 0.0, np.float32)
    return {"hidden": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}


def pad_token_ids(token_lists: pa.Array, pad_token_id: int) -> dict:
    """list<int32> array -> {"input_ids", "attention_mask"} padded to the longest row."""
    ids, mask = _pad_rows(np.diff(token_lists.offsets.to_numpy()),
                          token_lists.flatten().to_numpy(zero_copy_only=False), pad_token_id, np.int64)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def _pad_rows(lengths: np.ndarray, values: np.ndarray, fill, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `lengths` items laid end to end in `values` ([sum(lengths), ...]) -> (padded [rows, longest, ...]
    array filled with `fill`, int64 attention mask [rows, longest])."""
    longest = max(1, int(lengths.max()) if len(lengths) else 1)
    padded = np.full((len(lengths), longest, *values.shape[1:]), fill, dtype=dtype)
    mask = np.zeros((len(lengths), longest), dtype=np.int64)
    pos = 0
    for row, n in enumerate(lengths):
        padded[row, :n] = values[pos:pos + n]
        mask[row, :n] = 1
        pos += n
    return padded, mask


class ContrastiveModule(nn.Module):
    """MoMu wrapped so that one `forward` call produces every embedding of a step (DDP syncs on forward)."""

    def __init__(self, model: MoMu, objective: str, text_mode: str, text_train_layers: Optional[int] = None):
        super().__init__()
        self.model, self.objective, self.text_mode = model, objective, text_mode
        self.text_train_layers = text_train_layers
        if objective == "graphcl":  # graph-only: the text side takes no part (and DDP must not wait for it)
            model.text_encoder.requires_grad_(False)
            model.text_proj.requires_grad_(False)
        elif text_mode in ("frozen", "locked", "partial"):
            model.text_encoder.requires_grad_(False)
            if text_mode == "partial":  # only the top layers (+ pooler if pooling uses it) train
                if text_train_layers is None:
                    raise ValueError("text_train_layers: text_mode partial needs the number of top layers to train")
                for top in model.text_encoder.top_modules(text_train_layers):
                    top.requires_grad_(True)

    def train(self, mode: bool = True) -> "ContrastiveModule":
        super().train(mode)
        if self.text_mode in ("frozen", "locked", "partial"):
            self.model.text_encoder.model.eval()  # a frozen tower keeps no dropout inside BERT
        if self.text_mode == "partial" and self.objective != "graphcl":
            for top in self.model.text_encoder.top_modules(self.text_train_layers):
                top.train(mode)  # the trained top layers keep their dropout
        return self

    def embed_text(self, text: TextInput) -> torch.Tensor:
        encoder = self.model.text_encoder
        if self.text_mode == "locked":
            features = text
        elif self.text_mode == "partial":
            features = encoder.pool_from_hidden(text["hidden"], text["attention_mask"], self.text_train_layers)
        elif self.text_mode == "frozen":
            with torch.no_grad():
                features = encoder.pool(**text)
        else:
            return self.model.encode_text(**text)
        # Same path for locked, partial and frozen: dropout on pooled features, then the trainable head.
        return self.model.project_text(encoder.dropout(features))

    def forward(self, inputs: ContrastiveInputs):
        g1 = self.model.encode_graph(inputs.view1)
        if self.objective == "vse":
            return g1, self.embed_text(inputs.text1)
        g2 = self.model.encode_graph(inputs.view2)
        if self.objective == "graphcl":
            return g1, g2
        return g1, g2, self.embed_text(inputs.text1), self.embed_text(inputs.text2)


def contrastive_objective(embeddings: tuple, objective: str, temperature: float, losses=("g1t1", "g1t2", "g2t1", "g2t2"),
                          gather_negatives: bool = False, margin: float = 0.2) -> torch.Tensor:
    if objective == "vse":  # MoMu's retrieval finetuning: VSE++ max-violation hinge, in-batch negatives
        graph, text = embeddings
        return vse_max_violation_loss(graph, text, margin)
    if objective == "graphcl":
        g1, g2 = embeddings
        return info_nce(g1, g2, temperature, gather_negatives)
    g1, g2, t1, t2 = embeddings
    return momu_contrastive_loss((g1, g2), (t1, t2), temperature, pairs=losses, gather_negatives=gather_negatives)


class PrefetchedBatches:
    """Fetch and collate batches in a background thread, `depth` ahead of the training loop, across epochs.

    The loop's step time includes waiting at the DDP all-reduce for the slowest worker; collating the next batch
    during that wait (torch kernels release the GIL) hides most data time. `epochs` yields (epoch, batches) and is
    advanced in the thread, so the next epoch's iterator starts and its first batches are collated while the loop
    finishes the current epoch (and while rank 0 validates): on short epochs that start-up was most of the data
    wait. Order is preserved, so the (epoch, batch index)-keyed views stay exactly reproducible. `next_epoch()`
    returns an iterator of (batch_index, ContrastiveInputs) for the next epoch; batches of the first epoch with
    index < `skip` are consumed without collating (a resumed run's already-trained batches)."""

    _DONE = object()
    _END_OF_EPOCH = object()

    def __init__(self, epochs, collate, skip: int = 0, depth: int = 2):
        import queue
        import threading

        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(epochs, collate, skip), daemon=True)
        self._thread.start()

    def _run(self, epochs, collate, skip: int) -> None:
        try:
            for epoch, batches in epochs:
                for index, batch in enumerate(batches):
                    if self._stop.is_set():
                        return
                    if index >= skip:
                        self._put((index, collate(batch, epoch, index)))
                skip = 0
                self._put(self._END_OF_EPOCH)
            self._put(self._DONE)
        except BaseException as err:  # surfaced in the training loop, not lost in the thread
            self._put(err)

    def _put(self, item) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_epoch(self):
        """Iterator over the next epoch's (batch_index, inputs); empty once every epoch is done."""
        while True:
            item = self._queue.get()
            if item is self._DONE:
                self._queue.put(item)  # every later call sees the end too
                return
            if isinstance(item, BaseException):
                raise item
            if item is self._END_OF_EPOCH:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
