"""The graph-conditioned caption decoder (MoMu's captioning method on our encoder).

MoMu feeds its pooled GIN vector, through an MLP (300 -> d -> d), as one extra token in front of MolT5's encoder
outputs. MolT5 weights cannot reach these machines, so the decoder here is a small pre-norm Transformer decoder
trained from scratch that cross-attends to a *memory* made of

    graph   the pooled GIN vector through MoMu's MLP (one token) + the frozen GIN node embeddings (one token each,
            projected to d); `graph_memory: pooled` keeps only the pooled token, `none` neither (the text-prior
            ablation: the decoder then sees one learned constant token)
    edit    optionally the caption of the nearest pool molecule (retrieve-and-edit), embedded with the decoder's
            own token embeddings and a small Transformer encoder

with a learned segment embedding per memory kind. Tokens are SciBERT uncased WordPiece (the tokens MolT5's
metrics count) restricted to those seen in the training captions (`CaptionVocab`), which keeps the softmax small.

Generation: batched beam search (default 5 beams) with a KV cache, a length limit, a length penalty and an
optional no-repeat n-gram rule. Pure torch: no Ray, no RDKit.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from momu.caption.config import DecoderConfig

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # local ids of SPECIALS; [CLS] starts a caption, [SEP] ends it


# -- vocabulary -----------------------------------------------------------------------------------------------

class CaptionVocab:
    """SciBERT WordPiece tokens restricted to a training vocabulary: local id <-> SciBERT token."""

    def __init__(self, tokenizer, tokens: Sequence[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.tokenizer, self.tokens = tokenizer, list(tokens)
        self.local = {t: i for i, t in enumerate(self.tokens)}
        self.to_local = {tokenizer.convert_tokens_to_ids(t): i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_captions(cls, tokenizer, captions: Iterable[str], min_count: int = 2) -> "CaptionVocab":
        """The tokens seen at least `min_count` times (the rest decode as [UNK]), most frequent first."""
        counts = Counter(t for ids in tokenizer(list(captions), add_special_tokens=False)["input_ids"] for t in ids)
        kept = [tokenizer.convert_ids_to_tokens(i) for i, c in counts.most_common() if c >= min_count]
        return cls(tokenizer, list(SPECIALS) + [t for t in kept if t not in SPECIALS])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Captions -> local ids `[CLS] tokens [SEP]`, truncated to max_length (the [SEP] kept)."""
        out = []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            body = [self.to_local.get(i, UNK) for i in ids][:max_length - 2]
            out.append([BOS, *body, EOS])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Local ids -> text (special tokens dropped, WordPieces joined)."""
        tokens = [self.tokens[i] for i in ids if i not in (PAD, BOS, EOS) and 0 <= i < len(self.tokens)]
        return self.tokenizer.convert_tokens_to_string(tokens).strip()


def pad_ids(rows: Sequence[Sequence[int]], length: Optional[int] = None) -> torch.Tensor:
    length = length or max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        r = list(r)[:length]
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


# -- memory inputs ----------------------------------------------------------------------------------------------

@dataclass
class GraphMemoryInputs:
    """Frozen-encoder features of a batch of molecules: node embeddings padded [B, N, graph_dim] with mask
    [B, N] (True = a real node) and pooled GIN vectors [B, graph_dim]; optional neighbour caption ids [B, L]."""

    nodes: torch.Tensor
    node_mask: torch.Tensor
    pooled: torch.Tensor
    neighbour_ids: Optional[torch.Tensor] = None

    def to(self, device) -> "GraphMemoryInputs":
        return GraphMemoryInputs(self.nodes.to(device), self.node_mask.to(device), self.pooled.to(device),
                                 None if self.neighbour_ids is None else self.neighbour_ids.to(device))

    def index(self, rows: torch.Tensor) -> "GraphMemoryInputs":
        return GraphMemoryInputs(self.nodes[rows], self.node_mask[rows], self.pooled[rows],
                                 None if self.neighbour_ids is None else self.neighbour_ids[rows])

    @staticmethod
    def collate(node_features: Sequence[torch.Tensor], pooled: Sequence[torch.Tensor],
                neighbour_ids: Optional[Sequence[Sequence[int]]] = None) -> "GraphMemoryInputs":
        n = max(1, max(len(x) for x in node_features))
        dim = pooled[0].shape[-1]
        nodes = torch.zeros(len(node_features), n, dim)
        mask = torch.zeros(len(node_features), n, dtype=torch.bool)
        for i, x in enumerate(node_features):
            nodes[i, :len(x)] = x.float()
            mask[i, :len(x)] = True
        return GraphMemoryInputs(nodes, mask, torch.stack([p.float() for p in pooled]),
                                 None if neighbour_ids is None else pad_ids(neighbour_ids))


# -- layers -----------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head attention on F.scaled_dot_product_attention, with an optional key/value cache."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.k(x)), self._split(self.v(x))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: Optional[torch.Tensor] = None,
                causal: bool = False) -> torch.Tensor:
        q = self._split(self.q(x))
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        b, h, n, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * dh))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn, self.cross_attn = Attention(d, heads, dropout), Attention(d, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory_kv, memory_mask, cache: Optional[dict] = None):
        h = self.norm1(x)
        k, v = self.self_attn.kv(h)
        if cache is not None:  # incremental decoding: x is the newest position only
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        x = x + self.drop(self.self_attn(h, (k, v), causal=cache is None and x.shape[1] > 1))
        x = x + self.drop(self.cross_attn(self.norm2(x), memory_kv, memory_mask))
        return x + self.drop(self.ff(self.norm3(x)))


class CaptionDecoder(nn.Module):
    """Memory encoder (graph / neighbour caption) + Transformer decoder + tied output layer."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        if config.vocab_size < len(SPECIALS) + 1:
            raise ValueError("vocab_size: set it from the training vocabulary (CaptionVocab)")
        self.config = c = config
        d = c.d_model
        self.embed = nn.Embedding(c.vocab_size, d, padding_idx=PAD)
        self.position = nn.Embedding(c.max_length, d)
        self.segment = nn.Embedding(4, d)  # 0 pooled graph token, 1 node, 2 neighbour caption, 3 null token
        # MoMu's graph -> decoder bridge: the pooled GIN vector through a 2-layer MLP (300 -> d -> d).
        self.pooled_mlp = nn.Sequential(nn.Linear(c.graph_dim, d), nn.GELU(), nn.Linear(d, d))
        self.node_proj = nn.Sequential(nn.Linear(c.graph_dim, d), nn.LayerNorm(d))
        self.null_token = nn.Parameter(torch.zeros(1, 1, d))
        self.neighbour_encoder = None
        if c.neighbour_memory and c.neighbour_layers:
            layer = nn.TransformerEncoderLayer(d, c.heads, c.ff_dim, c.dropout, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.neighbour_encoder = nn.TransformerEncoder(layer, c.neighbour_layers, enable_nested_tensor=False)
        self.layers = nn.ModuleList(DecoderLayer(d, c.heads, c.ff_dim, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(c.dropout)
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- memory -----------------------------------------------------------------------------------------------
    def memory(self, inputs: GraphMemoryInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory tokens [B, M, d] and mask [B, M] (True = attend)."""
        c, b = self.config, inputs.pooled.shape[0]
        device = inputs.pooled.device
        parts, masks = [], []
        if c.graph_memory != "none":
            parts.append(self.pooled_mlp(inputs.pooled).unsqueeze(1) + self.segment.weight[0])
            masks.append(torch.ones(b, 1, dtype=torch.bool, device=device))
        if c.graph_memory == "nodes":
            parts.append(self.node_proj(inputs.nodes) + self.segment.weight[1])
            masks.append(inputs.node_mask)
        if c.neighbour_memory:
            if inputs.neighbour_ids is None:
                raise ValueError("this decoder attends to a neighbour caption: give neighbour_ids")
            ids = inputs.neighbour_ids[:, :c.max_length]
            positions = torch.arange(ids.shape[1], device=device)
            h = self.embed(ids) * math.sqrt(c.d_model) + self.position(positions) + self.segment.weight[2]
            mask = ids != PAD
            if self.neighbour_encoder is not None:
                h = self.neighbour_encoder(h, src_key_padding_mask=~mask)
            parts.append(h)
            masks.append(mask)
        # A learned constant token: the whole memory when there is no graph and no neighbour, and a safe place
        # for attention to rest otherwise.
        parts.append(self.null_token.expand(b, 1, -1) + self.segment.weight[3])
        masks.append(torch.ones(b, 1, dtype=torch.bool, device=device))
        return self.drop(torch.cat(parts, 1)), torch.cat(masks, 1)

    def _memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.kv(memory) for layer in self.layers]

    def _embed_tokens(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        return self.drop(self.embed(ids) * math.sqrt(self.config.d_model) + self.position(positions))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) @ self.embed.weight.t()  # tied with the input embedding

    # -- training -----------------------------------------------------------------------------------------------
    def forward(self, inputs: GraphMemoryInputs, caption_ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, L-1, V] predicting caption_ids[:, 1:] from caption_ids[:, :-1]."""
        memory, mask = self.memory(inputs)
        kv = self._memory_kv(memory)
        attn_mask = mask[:, None, None, :]
        h = self._embed_tokens(caption_ids[:, :-1])
        for layer, layer_kv in zip(self.layers, kv):
            h = layer(h, layer_kv, attn_mask)
        return self._logits(h)

    def loss(self, inputs: GraphMemoryInputs, caption_ids: torch.Tensor, label_smoothing: float = 0.0
             ) -> torch.Tensor:
        logits = self(inputs, caption_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), caption_ids[:, 1:].reshape(-1),
                               ignore_index=PAD, label_smoothing=label_smoothing)

    # -- generation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, inputs: GraphMemoryInputs, beams: int = 5, max_length: Optional[int] = None,
                 length_penalty: float = 1.0, no_repeat_ngram: int = 0, min_length: int = 2) -> list[list[int]]:
        """Beam search; returns the best caption (local ids, without [CLS]/[SEP]) per molecule. Scores are
        summed log-probabilities divided by length ** length_penalty (Hugging Face's convention)."""
        was_training = self.training
        self.eval()
        try:
            return self._beam_search(inputs, beams, min(max_length or self.config.max_length,
                                                        self.config.max_length), length_penalty, no_repeat_ngram,
                                     min_length)
        finally:
            self.train(was_training)

    def _beam_search(self, inputs, beams, max_length, length_penalty, no_repeat_ngram, min_length):
        b = inputs.pooled.shape[0]
        device = inputs.pooled.device
        memory, mask = self.memory(inputs)
        expand = torch.arange(b, device=device).repeat_interleave(beams)
        kv = [(k[expand], v[expand]) for k, v in self._memory_kv(memory)]
        attn_mask = mask[expand][:, None, None, :]
        caches = [{} for _ in self.layers]
        seqs = torch.full((b * beams, 1), BOS, dtype=torch.long, device=device)
        scores = torch.zeros(b, beams, device=device)
        scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive at first
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        vocab = self.config.vocab_size
        for step in range(max_length - 1):
            h = self._embed_tokens(seqs[:, -1:], start=step)
            for layer, layer_kv, cache in zip(self.layers, kv, caches):
                h = layer(h, layer_kv, attn_mask, cache)
            logp = F.log_softmax(self._logits(h[:, -1]).float(), -1)
            logp[:, PAD] = logp[:, BOS] = float("-inf")
            if step + 1 < min_length:
                logp[:, EOS] = float("-inf")
            if no_repeat_ngram:
                _block_repeats(logp, seqs, no_repeat_ngram)
            total = (scores.view(-1, 1) + logp).view(b, beams * vocab)
            top_scores, top_index = total.topk(2 * beams, dim=1)
            beam_of, token_of = top_index // vocab, top_index % vocab
            new_rows, new_tokens, new_scores = [], [], []
            for i in range(b):
                kept = 0
                for s, bi, tok in zip(top_scores[i].tolist(), beam_of[i].tolist(), token_of[i].tolist()):
                    if done[i] or s == float("-inf"):
                        break
                    row = i * beams + bi
                    if tok == EOS:
                        text = seqs[row, 1:].tolist()
                        finished[i].append((s / max(1, len(text) + 1) ** length_penalty, text))
                        continue
                    new_rows.append(row)
                    new_tokens.append(tok)
                    new_scores.append(s)
                    kept += 1
                    if kept == beams:
                        break
                while kept < beams:  # a finished molecule (or too few live candidates): dead padding beams
                    new_rows.append(i * beams)
                    new_tokens.append(PAD)
                    new_scores.append(float("-inf"))
                    kept += 1
                best_live = max(s for s in new_scores[-beams:])
                if len(finished[i]) >= beams and (best_live == float("-inf") or max(
                        f[0] for f in finished[i]) >= best_live / max_length ** length_penalty):
                    done[i] = True  # no live beam can still beat the finished ones
            if bool(done.all()):
                break
            rows = torch.tensor(new_rows, device=device)
            seqs = torch.cat([seqs[rows], torch.tensor(new_tokens, device=device).unsqueeze(1)], 1)
            scores = torch.tensor(new_scores, device=device).view(b, beams)
            for cache in caches:
                cache["k"], cache["v"] = cache["k"][rows], cache["v"][rows]
        out = []
        for i in range(b):
            if not finished[i]:  # hit the length limit: take the best live beam
                row = i * beams + int(scores[i].argmax())
                finished[i].append((0.0, seqs[row, 1:].tolist()))
            out.append([t for t in max(finished[i], key=lambda f: f[0])[1] if t != PAD])
        return out


def _block_repeats(logp: torch.Tensor, seqs: torch.Tensor, n: int) -> None:
    """No-repeat n-gram: forbid a token that would complete an n-gram already in the sequence."""
    if seqs.shape[1] < n:
        return
    history = seqs.tolist()
    for row, seq in enumerate(history):
        prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
        banned = [seq[j + n - 1] for j in range(len(seq) - n + 1) if tuple(seq[j:j + n - 1]) == prefix]
        if banned:
            logp[row, banned] = float("-inf")


def build_decoder(config: DecoderConfig) -> CaptionDecoder:
    return CaptionDecoder(config)
