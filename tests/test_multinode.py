"""Multi-node on loopback: the placement config field, the helpers of benchmarks/multinode_loopback.sh, and (slow,
opt-in with MOMU_MULTINODE_TEST=1) the script itself: a two-node Ray cluster on 127.0.0.1 where pretraining and
embedding lose a node mid-run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from momu.cli import build_parser, config_from_args
from momu.config import ConfigError, flatten_config, load_config
from momu.pretrain.config import PretrainConfig

from conftest import REPO

BENCH = REPO / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_placement_strategy_is_one_name_in_yaml_cli_and_mlflow(tmp_path):
    args = build_parser().parse_args(["pretrain", "--config", str(REPO / "configs" / "pretrain_tiny.yaml"),
                                      "--scaling.placement_strategy", "STRICT_SPREAD"])
    cfg = config_from_args(PretrainConfig, args)
    assert cfg.scaling.placement_strategy == "STRICT_SPREAD"
    assert flatten_config(cfg)["scaling.placement_strategy"] == "STRICT_SPREAD"
    assert PretrainConfig().scaling.placement_strategy == "PACK"  # Ray Train's default
    path = tmp_path / "bad.yaml"
    path.write_text("scaling: {num_workers: 2, placement_strategy: SPREAD_OUT}\n")
    with pytest.raises(ConfigError, match=r"scaling\.placement_strategy"):
        load_config(PretrainConfig, path)


def test_loopback_node_refuses_other_addresses_and_cluster_mode(monkeypatch):
    node = _module("loopback_node")
    ports = [f"--{p}=1" for p in ("node-manager-port", "object-manager-port", "min-worker-port", "max-worker-port",
                                   "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                   "metrics-export-port", "runtime-env-agent-port")]
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with pytest.raises(SystemExit, match="not on 127.0.0.1"):
        node.main(["--address", "10.1.2.3:6390", "--temp-dir", "/tmp/x", *ports])
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    with pytest.raises(SystemExit, match="RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"):
        node.main(["--address", "127.0.0.1:6390", "--temp-dir", "/tmp/x", *ports])


def _fake_output(root, shard_ids: list[list[int]], rejected: list[int], read: int):
    """An embedding output directory as `momu embed` lays it out (DONE.json, parts.jsonl, shards, rejects)."""
    (root / "shards").mkdir(parents=True)
    shards = []
    for i, ids in enumerate(shard_ids):
        name = f"shards/part-{i}.parquet"
        pq.write_table(pa.table({"id": [str(x) for x in ids], "embedding": [[0.5, 0.5]] * len(ids)}), root / name)
        shards.append(name)
        (root / "parts.jsonl").open("a").write(json.dumps({"unit": f"f/p{i}", "rows": len(ids)}) + "\n")
    pq.write_table(pa.table({"id": [str(x) for x in rejected]}), root / "rejects.parquet")
    embedded = sum(map(len, shard_ids))
    (root / "DONE.json").write_text(json.dumps({
        "complete": True, "rows_read": read, "embedded": embedded, "rejected": len(rejected),
        "accounting_ok": read == embedded + len(rejected), "shards": shards}))
    (root / "manifest.json").write_text(json.dumps({"attempts": [{}, {}]}))


@pytest.mark.parametrize("shard_ids, rejected, read, problem", [
    ([[0, 1, 2], [3, 4]], [5], 6, None),
    ([[0, 1, 2], [2, 3, 4]], [5], 6, "duplicate_ids"),   # a part written twice by two attempts
    ([[0, 1, 2], [3]], [5], 6, "missing_ids"),           # a part lost with the node
])
def test_embed_check_finds_lost_and_duplicated_rows(tmp_path, capsys, shard_ids, rejected, read, problem):
    check = _module("multinode_check")
    (tmp_path / "in.csv").write_text("mol_id,smiles\n" + "".join(f"{i},C\n" for i in range(6)))
    _fake_output(tmp_path / "out", shard_ids, rejected, read)
    check.main(["embed-check", "--output", str(tmp_path / "out"), "--input", str(tmp_path / "in.csv"),
                "--id-column", "mol_id"])
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is (problem is None), result
    if problem:
        assert result[problem] == 1, result


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(os.environ.get("MOMU_MULTINODE_TEST") != "1",
                    reason="starts a two-node Ray cluster on loopback for several minutes; set MOMU_MULTINODE_TEST=1")
def test_multinode_loopback_script_passes():
    env = {**os.environ, "MOMU_PYTHON": sys.executable}
    run = subprocess.run(["bash", str(BENCH / "multinode_loopback.sh")], env=env, capture_output=True, text=True,
                         timeout=1400, cwd=REPO)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "PASS: multinode loopback" in out, out[-6000:]
    assert "FAIL" not in out.split("==== multinode loopback summary")[-1], out[-6000:]
