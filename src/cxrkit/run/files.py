"""The run folder as a file-format contract: every file name a run holds is defined here, once.

A run folder is a self-contained model: ``best.pt`` (weights) and ``model.json`` (model spec,
labels, task, input spec, thresholds, operating point, calibration, versions) are all that
prediction needs. The other files record how it was trained and evaluated.
"""

from __future__ import annotations

from pathlib import Path

from cxrkit.outputs import json_safe  # noqa: F401  (the run's JSON files are written with it)

RUN_FORMAT = 2  # the newest format this cxrkit reads; bump when model.json or checkpoints change incompatibly
# format 2: model.json may ask for input intensity standardization, test-time views or a K-fold ensemble,
# which a format-1 reader would silently skip; runs that use none of them are still written as format 1


def package_format(model_config: dict, intensity: str) -> int:
    """The oldest format that describes a run: 2 when it needs intensity, TTA or ensemble support, else 1."""
    needs = intensity != "none" or int(model_config.get("tta", 0)) > 1 or bool(model_config.get("ensemble"))
    return 2 if needs else 1


CONFIG = "config.yaml"  # the resolved RunConfig
SPLIT = "split.csv"  # image -> train/val/test, as trained
HISTORY = "history.csv"  # one row per epoch (older runs: metrics.csv, never read)
CURVES = "curves.png"
BEST = "best.pt"  # weights of the best epoch (what prediction loads)
LAST = "last.pt"  # weights + optimiser state of the last epoch (what --resume loads)
SUMMARY = "summary.json"  # best epoch's validation metrics, training time, size
PACKAGE = "model.json"  # what prediction needs besides the weights (see run.package)
BOTTLENECK = "bottleneck.npz"
INIT = "init.json"  # cxr train --init-from: the parent run, its weights digest, labels and network
LOCALIZATION = "localization.json"  # cxr localize's result (read by the evaluation report)
LOCALIZATION_DIR = "localization"
EXPLAIN_DIR = "explain"
ONNX = "model.onnx"  # cxr export: the network as ONNX (float32), read by the onnx engine
ONNX_INT8 = "model.int8.onnx"  # cxr export --int8: statically quantized copy
OPENVINO = "model.xml"  # cxr export --openvino: OpenVINO IR (float32; weights in model.bin)
OPENVINO_INT8 = "model.int8.xml"  # cxr export --openvino --int8: NNCF int8 copy (model.int8.bin)
EXPORT = "export.json"  # cxr export's parity and int8 AUC report
CV = "cv.json"  # a K-fold parent's cross-validated AUC (mean, sd, pooled out of fold)
ROBUSTNESS_SUMMARY = "robustness.json"  # cxr robustness, in robustness-SPLIT/
ROBUSTNESS_TABLE = "robustness.csv"
ROBUSTNESS_PLOT = "robustness.png"
LOCALIZATION_SCORES = "scores.csv"  # cxr localize, in localization/: per image and label
LOCALIZATION_TABLE = "table.csv"  # the IoBB/IoU accuracy table
LOCALIZATION_OVERLAYS = "overlays.png"
COMPARISON_CSV = "comparison.csv"  # cxr compare and cxr experiments, in their output folder
COMPARISON_HTML = "comparison.html"


def eval_dir(run_dir: Path, split: str) -> Path:
    """Where ``cxr evaluate RUN --split SPLIT`` writes (evaluation.json, CSVs, report.html)."""
    return Path(run_dir) / f"eval-{split}"


def robustness_dir(run_dir: str | Path, split: str) -> Path:
    """Where ``cxr robustness RUN --split SPLIT`` writes by default (read by the evaluation report)."""
    return Path(run_dir) / f"robustness-{split}"


def validation_dir(run_dir: Path, site: str) -> Path:
    """Where ``cxr validate RUN DATA`` writes by default: ``validate-SITE`` (SITE: the data folder's name)."""
    return Path(run_dir) / f"validate-{site}"


def triage_dir(run_dir: Path, split: str | None) -> Path:
    """Where ``cxr triage`` writes: ``triage-SPLIT`` or ``triage-images`` for new files."""
    return Path(run_dir) / (f"triage-{split}" if split else "triage-images")


def check_run_folder(run_dir: Path, need: tuple[str, ...] = (BEST,)) -> Path:
    """``run_dir`` as a Path; a clear error naming the folder and the missing file if it is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    for name in need:
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run folder: {name} is missing")
    return run_dir


# what the workflows write inside eval-SPLIT/, triage-*/ and the predictions table
EVALUATION = "evaluation.json"  # cxr evaluate's figures ("metrics" names only the metric functions)
OLD_EVALUATION = "metrics.json"  # its older name, still read in runs evaluated before the rename
REPORT = "report.html"
PER_LABEL = "per_label.csv"
PREDICTIONS = "predictions.csv"
WORKLIST = "worklist.csv"
SWEEP = "triage_sweep.csv"
SWEEP_PLOT = "triage_sweep.png"
TRIAGE = "triage.json"


def evaluation_file(folder: str | Path) -> Path:
    """An ``eval-SPLIT`` folder's evaluation.json, or an older run's metrics.json when only that exists."""
    new, old = Path(folder) / EVALUATION, Path(folder) / OLD_EVALUATION
    return old if old.is_file() and not new.is_file() else new


def eval_dirs(run_dir: Path) -> list[Path]:
    """Every ``eval-SPLIT`` folder of a run that holds a finished evaluation (its evaluation.json)."""
    return sorted(p for p in Path(run_dir).glob("eval-*") if evaluation_file(p).is_file())
