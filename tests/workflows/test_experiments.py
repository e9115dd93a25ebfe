"""Experiment grids write one comparison table with every run."""

import pandas as pd
import yaml

from cxrkit.cli import main


def test_grid_runs_every_config_and_compares(tmp_path, capsys):
    base = {
        "data": {"source": "phantom", "n": 80, "size": 32},
        "prepare": {"size": 32},
        "model": {"name": "cnn2_64_128_bn"},
        "train": {"epochs": 1, "batch_size": 32, "progress": False},
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {
        "base": "base.yaml",
        "out": str(tmp_path / "grid"),
        "runs": [
            {"name": "batch 32"},
            {"name": "batch 16", "train.batch_size": 16},
            {"name": "chestmnist net", "model.name": "chestmnist_cnn"},
        ],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert main(["experiments", str(tmp_path / "grid.yaml")]) == 0
    table = pd.read_csv(tmp_path / "grid" / "comparison.csv")
    assert list(table["name"]) == ["batch 32", "batch 16", "chestmnist net"]
    for col in (
        "train_seconds",
        "val_loss",
        "binary_accuracy",
        "macro_auc",
        "micro_precision",
        "macro_recall",
        "macro_f1",
        "parameters",
    ):
        assert table[col].notna().all(), col
    assert table.loc[2, "model"] == "chestmnist_cnn" and table.loc[1, "changes"] == "train.batch_size=16"
    assert "| batch 16 |" in (tmp_path / "grid" / "comparison.md").read_text()
    assert "<table" in (tmp_path / "grid" / "comparison.html").read_text()
    assert "comparison:" in capsys.readouterr().out
