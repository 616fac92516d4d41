"""`momu caption`: batch captioning of molecule libraries with the retrieval captioner, on Ray Data.

    from_items(files) -> read_parts (CPU tasks: the embedding job's readers, momu.embed.sources.iter_parts)
                      -> CaptionRows (actor pool: each actor holds the pool, and the model for the MoMu kinds)
                      -> write_caption_rows (Parquet: captions/*.parquet and rejects/*.parquet; one summary row each)

Every input row is captioned or rejected with its reason: reader-refused rows (wrong field count, missing SMILES,
...) travel through the pipeline as rejects, RDKit failures are rejected at the caption stage. The driver sums the
writers' summaries, checks read = captioned + rejected, prints it and writes manifest.json.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from momu.caption.config import CaptionJobConfig
from momu.caption.retrieval import LABEL, CaptionPool
from momu.embed.sources import check_columns, expand_inputs, iter_parts
from momu.embed.stages import REJECTS_SCHEMA, atomic_write_table, write_rejects

CAPTIONS_DIR = "captions"
REJECTS_DIR = "rejects"
REJECTS_FILE = "rejects.parquet"
MANIFEST_FILE = "manifest.json"
CAPTION_SCHEMA = pa.schema([
    ("id", pa.string()), ("smiles", pa.string()), ("input", pa.string()), ("caption", pa.string()),
    ("label", pa.string()), ("captioner", pa.string()), ("captioner_version", pa.string()),
    ("neighbour_id", pa.string()), ("neighbour_smiles", pa.string()), ("similarity", pa.float32()),
    ("similarity_kind", pa.string()), ("source", pa.string())])
SUMMARY_SCHEMA = pa.schema([("rows", pa.int64()), ("captioned", pa.int64()), ("rejected", pa.int64()),
                            ("reasons", pa.string()), ("captions_file", pa.string()), ("rejects_file", pa.string())])


# -- stages (plain callables over pyarrow tables; Ray Data runs them) ---------------------------------------------

def read_parts(batch: pa.Table, part_rows: int, smiles_column, id_column) -> Iterator[pa.Table]:
    """Input files -> their rows as PART_SCHEMA tables (reader-refused rows included, with their reason)."""
    for path in batch.column("path").to_pylist():
        for part in iter_parts(Path(path), "molecules", part_rows, smiles_column, id_column):
            yield part.table


class CaptionRows:
    """The caption stage: loads the captioner once per actor; rows already rejected pass through."""

    def __init__(self, pool: str, kind: str, model, fusion_k: int, fusion_weight: float, torch_threads: int = 1):
        import torch

        from momu.caption.captioner import DecoderCaptioner, is_decoder_captioner
        from momu.caption.retrieval import load_captioner

        torch.set_num_threads(max(1, int(torch_threads)))
        if is_decoder_captioner(pool):  # a `momu finetune caption` export: generated captions
            self.captioner = DecoderCaptioner(pool)
        else:
            self.captioner = load_captioner(pool, kind, model, fusion_k, fusion_weight)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from momu.chem.featurize import Rejection, parse_smiles

        n = batch.num_rows
        reasons = batch.column("reject_reason").to_pylist()
        details = batch.column("reject_detail").to_pylist()
        stages = batch.column("reject_stage").to_pylist()
        cols = {name: [None] * n for name in ("smiles", "caption", "neighbour_id", "neighbour_smiles", "similarity")}
        todo, mols = [], []
        for i, raw in enumerate(batch.column("input").to_pylist()):
            if reasons[i]:
                continue
            mol = parse_smiles(raw)
            if isinstance(mol, Rejection):
                reasons[i], details[i], stages[i] = mol.reason, mol.detail, "caption"
            else:
                todo.append(i)
                mols.append(mol)
        for i, result in zip(todo, self.captioner.caption_mols(mols)):
            if isinstance(result, Rejection):  # the MoMu kinds refuse what the featurizer refuses
                reasons[i], details[i], stages[i] = result.reason, result.detail, "caption"
                continue
            cols["smiles"][i], cols["caption"][i] = result.query_smiles, result.caption
            if result.neighbours:  # retrieval: the source of the caption; retrieve-and-edit: the one it read
                best = result.neighbours[0]
                cols["neighbour_id"][i], cols["neighbour_smiles"][i] = best.id, best.smiles
                cols["similarity"][i] = best.similarity
        out = batch.drop_columns(["reject_reason", "reject_detail", "reject_stage"])
        for name, values in (("reject_reason", reasons), ("reject_detail", details), ("reject_stage", stages)):
            out = out.append_column(name, pa.array(values, pa.string()))
        for name, values in cols.items():
            out = out.append_column(name, pa.array(values, pa.float32() if name == "similarity" else pa.string()))
        return out


def write_caption_rows(batch: pa.Table, output_dir: str, captioner: str, version: str, similarity_kind: str,
                       label: str = LABEL) -> pa.Table:
    """Captioned rows -> captions/<name>.parquet, rejected rows -> rejects/<name>.parquet (atomic writes);
    returns one SUMMARY_SCHEMA row."""
    out = Path(output_dir)
    name = f"{uuid.uuid4().hex[:16]}.parquet"
    ok = pc.equal(batch.column("reject_reason"), "")
    good, bad = batch.filter(ok), batch.filter(pc.invert(ok))
    captions_file = rejects_file = ""
    if good.num_rows:
        m = good.num_rows
        table = pa.table([good.column("id"), good.column("smiles"), good.column("input"), good.column("caption"),
                          pa.array([label] * m), pa.array([captioner] * m), pa.array([version] * m),
                          good.column("neighbour_id"), good.column("neighbour_smiles"), good.column("similarity"),
                          pa.array([similarity_kind] * m), good.column("source")], schema=CAPTION_SCHEMA)
        atomic_write_table(table, out / CAPTIONS_DIR / name)
        captions_file = name
    if bad.num_rows:
        write_rejects(bad, out / REJECTS_DIR / name)
        rejects_file = name
    reasons = json.dumps(dict(Counter(bad.column("reject_reason").to_pylist())))
    return pa.table({"rows": [batch.num_rows], "captioned": [good.num_rows], "rejected": [bad.num_rows],
                     "reasons": [reasons], "captions_file": [captions_file], "rejects_file": [rejects_file]},
                    schema=SUMMARY_SCHEMA)


# -- driver ---------------------------------------------------------------------------------------------------

def run_caption_job(config: CaptionJobConfig) -> dict:
    """Caption every input molecule; returns the summary (also in <output_dir>/manifest.json)."""
    files = expand_inputs(config.inputs, "molecules")
    for f in files:
        check_columns(f, "molecules", config.smiles_column, config.id_column)
    from momu.caption.captioner import is_decoder_captioner

    decoder = is_decoder_captioner(config.captioner)
    pool = CaptionPool(Path(config.captioner) / "pool" if decoder else config.captioner)  # fail before Ray starts
    if config.kind == "auto" and not decoder:  # ranked (with the pool's embedding model) or tanimoto
        from momu.caption.retrieval import resolve_kind

        kind = resolve_kind(pool, "auto")
        model = config.model or ((pool.manifest.get("embeddings") or {}).get("model") if kind != "tanimoto" else None)
        config = config.model_copy(update={"kind": kind, "model": model})
    if config.kind != "tanimoto" and not decoder:
        if not config.model:
            raise ValueError(f"model: kind {config.kind!r} needs a MoMu model")
        from momu.models.loading import resolve_model_dir

        resolve_model_dir(config.model)  # a missing model fails before Ray starts
    out = Path(config.output_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output_dir: {out} is not empty; choose a new directory")
    for sub in (CAPTIONS_DIR, REJECTS_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)

    import ray
    import ray.data

    from momu.caption.retrieval import SIMILARITY_KINDS
    from momu.ray_session import init_ray_if_needed

    init_ray_if_needed()
    started = time.perf_counter()
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size
    ctx.target_max_block_size = 1 << 18  # small blocks keep every actor busy on small inputs (see momu.embed.job)
    try:
        # Name and version as the actors' captioners report them (the model's weights hash, read once here).
        probe = _identity(config, pool)
        ds = ray.data.from_items([{"path": str(f.resolve())} for f in files], override_num_blocks=len(files))
        ds = ds.map_batches(read_parts, batch_size=1, batch_format="pyarrow", num_cpus=0.25,
                            fn_kwargs={"part_rows": config.part_rows, "smiles_column": config.smiles_column,
                                       "id_column": config.id_column})
        ds = ds.map_batches(CaptionRows, batch_size=config.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=config.actors), num_cpus=config.cpus_per_actor,
                            fn_constructor_kwargs={"pool": str(Path(config.captioner).resolve()), "kind": config.kind,
                                                   "model": config.model, "fusion_k": config.fusion_k,
                                                   "fusion_weight": config.fusion_weight,
                                                   "torch_threads": max(1, int(config.cpus_per_actor))})
        ds = ds.map_batches(write_caption_rows, batch_size=None, batch_format="pyarrow", num_cpus=0,
                            fn_kwargs={"output_dir": str(out.resolve()), **probe,
                                       "similarity_kind": "generated" if decoder else SIMILARITY_KINDS[config.kind]})
        summaries = ds.take_all()
    finally:
        ctx.target_max_block_size = saved
    seconds = time.perf_counter() - started
    reasons: Counter = Counter()
    for row in summaries:
        reasons.update(json.loads(row["reasons"]))
    rows = sum(r["rows"] for r in summaries)
    captioned = sum(r["captioned"] for r in summaries)
    rejected = sum(r["rejected"] for r in summaries)
    reject_files = sorted(r["rejects_file"] for r in summaries if r["rejects_file"])
    tables = [pq.read_table(out / REJECTS_DIR / f, schema=REJECTS_SCHEMA) for f in reject_files]
    atomic_write_table(pa.concat_tables(tables) if tables else REJECTS_SCHEMA.empty_table(), out / REJECTS_FILE)
    summary = {
        "output_dir": str(out.resolve()), "inputs": [str(f) for f in files], "rows_read": rows,
        "captioned": captioned, "rejected": rejected, "rejected_by_reason": dict(reasons.most_common()),
        "accounting_ok": rows == captioned + rejected, **probe, "kind": "decoder" if decoder else config.kind,
        "pool": str(pool.path.resolve()), "pool_rows": len(pool), "model": config.model,
        "captions": sorted(f"{CAPTIONS_DIR}/{r['captions_file']}" for r in summaries if r["captions_file"]),
        "rejects_file": REJECTS_FILE, "seconds": round(seconds, 2),
        "molecules_per_s": round(rows / seconds, 1) if seconds else None,
        "config": config.model_dump(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if not summary["accounting_ok"]:
        raise RuntimeError(f"row accounting mismatch: read {rows} != captioned {captioned} + rejected {rejected}")
    return summary


def _identity(config: CaptionJobConfig, pool: CaptionPool) -> dict:
    """captioner name, version and label as the actors will report them (the model's weights hash for MoMu
    kinds; the decoder's own weights hash for a decoder captioner)."""
    from momu.caption.captioner import LABEL as GENERATED, is_decoder_captioner
    from momu.caption.retrieval import RANKED_LABEL, captioner_version

    if is_decoder_captioner(config.captioner):
        from momu.caption.captioner import decoder_name
        from momu.caption.config import DecoderConfig

        meta = json.loads((Path(config.captioner) / "captioner.json").read_text())
        return {"captioner": decoder_name(DecoderConfig.model_validate(meta["decoder"])),
                "version": f"decoder:sha256:{meta['weights_sha256'][:12]}", "label": GENERATED}
    sha = None
    if config.kind != "tanimoto":
        from momu.models.loading import resolve_model_dir, weights_sha256

        sha = weights_sha256(resolve_model_dir(config.model))
    return {"captioner": f"retrieval-{config.kind}",
            "version": captioner_version(pool, config.kind, sha, config.fusion_k, config.fusion_weight),
            "label": RANKED_LABEL if config.kind == "ranked" else LABEL}


def format_summary(summary: dict) -> str:
    ok = "ok" if summary["accounting_ok"] else "MISMATCH"
    lines = [f"read = captioned + rejected: {summary['rows_read']:,} = {summary['captioned']:,} + "
             f"{summary['rejected']:,} ({ok})"]
    if summary["rejected_by_reason"]:
        lines.append("rejected by reason: " + ", ".join(f"{r} {n:,}" for r, n in summary["rejected_by_reason"].items()))
    lines.append(f"captioner: {summary['captioner']} {summary['version']} ({summary['pool_rows']:,} pool molecules); "
                 f"captions: {summary['label']}")
    lines.append(f"{summary['seconds']:.1f} s, {summary['molecules_per_s']:,} molecules/s (Ray start-up included)")
    lines.append(f"output: {summary['output_dir']} ({len(summary['captions'])} caption files, "
                 f"{summary['rejected']:,} rejects in {summary['rejects_file']}, manifest.json)")
    return "\n".join(lines)
