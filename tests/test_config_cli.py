import subprocess
import sys

import pytest

from momu.cli import build_parser, main
from momu.config import ConfigError, flatten_config, load_config
from momu.pretrain.config import TrainConfig

from conftest import REPO


def test_defaults_are_momus():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.seed) == (1e-4, 1e-5, 32, 100)
    assert cfg.model.temperature == 0.1 and cfg.model.proj_dim == 256
    assert cfg.model.graph.num_layers == 5 and cfg.model.graph.emb_dim == 300
    assert cfg.losses == ["g1t1", "g1t2", "g2t1", "g2t2"]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nmodel:\n  graph:\n    num_layers: 3\n")
    cfg = load_config(TrainConfig, path, {"lr": 0.01, "model.text.pooling": "cls"})
    assert cfg.steps == 10 and cfg.model.graph.num_layers == 3 and cfg.lr == 0.01 and cfg.model.text.pooling == "cls"


@pytest.mark.parametrize("yaml_text, field", [
    ("stpes: 10\n", "stpes"),  # typo
    ("lr: -1\n", "lr"),
    ("model:\n  graph:\n    self_loop_bond_type: 2\n", "model.graph.self_loop_bond_type"),
    ("model:\n  text:\n    pooling: max\n", "model.text.pooling"),
    ("losses: []\n", "losses"),
])
def test_bad_config_names_the_field(tmp_path, yaml_text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(TrainConfig, path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_flattened_names_are_the_cli_flags():
    names = set(flatten_config(TrainConfig()))
    help_text = build_parser()._subparsers._group_actions[0].choices["train-local"].format_help()
    for name in names:
        assert f"--{name}" in help_text, name


def test_cli_bad_flag_value_exits_2_naming_field(capsys):
    assert main(["train-local", "--steps", "0", "--no-mlflow", "--quiet"]) == 2
    assert "steps" in capsys.readouterr().err


def test_cli_help_lists_jobs():
    out = subprocess.run([sys.executable, "-m", "momu.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for job in ("train-local", "featurize", "convert-corpus"):
        assert job in out.stdout
    sub = subprocess.run([sys.executable, "-m", "momu.cli", "train-local", "--help"], capture_output=True, text=True)
    assert sub.returncode == 0 and "--model.graph.self_loop_bond_type" in sub.stdout


def test_cli_convert_corpus(tmp_path, capsys):
    from conftest import SAMPLE
    from momu.data.readers import read_records_parquet

    out = tmp_path / "corpus.parquet"
    assert main(["convert-corpus", str(SAMPLE / "momu_corpus"), str(out)]) == 0
    assert "6 ok" in capsys.readouterr().out
    assert read_records_parquet(out).table.num_rows == 6


def test_training_summary_names_selection_only_when_configured(capsys, tmp_path):
    from momu.pretrain.cli import print_training_result
    from momu.pretrain.config import PretrainConfig
    from momu.retrieval.config import RetrievalFinetuneConfig
    from momu.pretrain.ray_train import PretrainResult

    metrics = {"step": 12, "epoch": 3, "train_loss": 0.5, "val_acc_g2t": 0.25, "val_acc_t2g": 0.5,
               "val_chance": 0.02, "samples_per_s_overall": 99.0, "data_wait_fraction": 0.031,
               "best_val_acc_mean": 0.4, "best_step": 8}
    result = PretrainResult("r", str(tmp_path / "ckpt"), tmp_path / "model", metrics, {})
    print_training_result(result, PretrainConfig(select_best=None))
    plain = capsys.readouterr().out
    assert "run r: 12 steps, epoch 3, train loss 0.500" in plain
    assert "\nvalidation 1-of-64 in-batch accuracy: graph->text 0.250, text->graph 0.500" in plain
    assert "selected:" not in plain and "data wait 3.1%" in plain and "MLflow" not in plain
    print_training_result(result, RetrievalFinetuneConfig(init_from=str(tmp_path)))
    tuned = capsys.readouterr().out
    assert "last validation 1-of-64" in tuned and "selected: step 8 with held-out acc_mean 0.400" in tuned
