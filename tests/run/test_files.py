"""The run folder's file names: an evaluation written before the rename (metrics.json) is still found."""

from __future__ import annotations

from pathlib import Path

from cxrkit.run import files


def test_evaluation_file_prefers_the_new_name_and_reads_the_old(tmp_path: Path) -> None:
    old_only, both, none = (tmp_path / "run" / f"eval-{s}" for s in ("val", "test", "train"))
    for folder in (old_only, both, none):
        folder.mkdir(parents=True)
    (old_only / "metrics.json").write_text("{}")
    (both / "metrics.json").write_text("{}")
    (both / "evaluation.json").write_text("{}")
    assert files.evaluation_file(old_only).name == "metrics.json"
    assert files.evaluation_file(both).name == "evaluation.json"
    assert files.evaluation_file(none).name == "evaluation.json"  # where a new evaluation goes
    assert files.eval_dirs(tmp_path / "run") == [both, old_only]  # eval-train holds no evaluation


def test_compare_reads_an_older_runs_metrics_json(tmp_path: Path) -> None:
    from cxrkit.workflows.compare import read_evaluation

    folder = tmp_path / "run" / "eval-test"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"macro_auc": {"value": 0.75}}')
    assert read_evaluation(tmp_path / "run", "test")["macro_auc"]["value"] == 0.75
