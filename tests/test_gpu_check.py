"""benchmarks/gpu_check.sh must at least run on a CPU machine (--dry-run) before a GPU machine is available."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_row(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHON": str(REPO / ".venv" / "bin" / "python")} if (REPO / ".venv").exists() else None
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--budget-s", "400",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    for name in ("pretrain, text tower training", "pretrain, locked text", "embed, model only",
                 "embed, featurize (all CPU cores)", "caption decoder training"):
        assert rows[name]["value"] > 0, rows[name]
    assert rows["caption decoder training"]["unit"] == "captions/s"
    serve = [r for n, r in rows.items() if n.startswith("serve /v1/embed")]
    assert len(serve) == 2 and all(r["value"] > 0 and "0 errors" in r["detail"] for r in serve), rows
    assert "| check | result | detail |" in run.stdout


def test_gpu_check_refuses_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 2 and "no CUDA device" in run.stderr
