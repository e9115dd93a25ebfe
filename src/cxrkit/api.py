"""The Python API: ``train``, ``load_run`` and ``Run`` (a run folder as a model, plus its workflows).

import cxrkit
run = cxrkit.train("configs/phantom.yaml", train={"epochs": 3})
table = run.predict(["chest.png", "more/"])          # DataFrame, one row per image
run = cxrkit.load_run("runs/phantom-cnn")            # anywhere, without its training data
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.config import EvalConfig, RunConfig, build_run_config, load_yaml
from cxrkit.outputs import read_json
from cxrkit.run import files
from cxrkit.run.inputs import Input
from cxrkit.run.model import RunModel


class Run(RunModel):
    """A trained run: ``predict`` needs only the folder; ``evaluate`` re-scores a split (needs its data)."""

    def evaluate(self, split: str = "test", log: Callable[[str], None] = print, **options: Any) -> dict:
        """Evaluate on ``split`` (writes RUN/eval-SPLIT/ with report.html); returns evaluation.json's content.

        ``options``: any ``EvalConfig`` field (threshold, beta, target_sensitivity, n_boot, ...).
        """

        from cxrkit.workflows.evaluate import evaluate_run

        options.setdefault("device", self.device.type)
        out = evaluate_run(self.path, EvalConfig(split=split, **options), log=log)
        return read_json(files.evaluation_file(out))

    def robustness(self, split: str = "test", log: Callable[[str], None] = print, **options: Any) -> dict:
        """Score ``split`` under acquisition shifts (writes RUN/robustness-SPLIT/); return robustness.json.

        ``options``: any ``RobustnessConfig`` field (shifts, severities, seed, chunk, out).
        """

        from cxrkit.workflows.robustness import SUMMARY, RobustnessConfig, robustness_run

        options.setdefault("device", self.device.type)
        out = robustness_run(self.path, RobustnessConfig(split=split, **options), log=log)
        return read_json(out / SUMMARY)

    def triage(
        self,
        inputs: Input | Sequence[Input] | None = None,
        target_sensitivity: float | None = None,
        out: str | Path | None = None,
        log: Callable[[str], None] = print,
        accept_missing_modality: bool = False,
    ) -> pd.DataFrame:
        """The worklist (most urgent first) of new images, or of the run's test split without ``inputs``."""
        from cxrkit.workflows.evaluate import read_worklist
        from cxrkit.workflows.triage import triage

        folder = triage(
            self,
            inputs,
            target=target_sensitivity,
            out=out,
            log=log,
            accept_missing_modality=accept_missing_modality,
        )
        return read_worklist(folder / files.WORKLIST)

    def explain(
        self,
        inputs: Input | Sequence[Input],
        labels: Sequence[str] = (),
        top: int = 3,
        method: str = "gradcam",
        out: str | Path | None = None,
        log: Callable[[str], None] = print,
        accept_missing_modality: bool = False,
    ) -> list[Path]:
        """Grad-CAM overlay PNGs for ``labels`` (default: each image's ``top`` findings); their paths."""
        from cxrkit.workflows.explain import explain_images

        return explain_images(
            self,
            inputs,
            labels=labels,
            top=top,
            method=method,
            out=out,
            log=log,
            accept_missing_modality=accept_missing_modality,
        )


def load_run(path: str | Path, device: str = "auto", engine: str = "torch") -> Run:
    """Load a run folder (best.pt + model.json) as a ``Run``; works after moving it, without its data.

    ``engine``: torch, onnx / onnx-int8 (ONNX Runtime), openvino / openvino-int8 (OpenVINO) on the files
    ``cxr export`` wrote, or auto.
    """
    return Run.load(path, device, engine)  # type: ignore[return-value]


def _overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``train={"epochs": 3}`` and ``**{"train.epochs": 3}`` both become ``{"train.epochs": 3}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key.replace("__", ".")] = value
    return out


def train(
    config: RunConfig | Mapping[str, Any] | str | Path | None = None,
    log: Callable[[str], None] = print,
    **overrides: Any,
) -> Run:
    """Train as ``config`` says (a RunConfig, a mapping like the YAML, or a YAML path); return the run.

    ``overrides`` win over the config: ``train={"epochs": 3}``, ``train__epochs=3`` or ``name="x"``.
    """
    from cxrkit.training.loop import fit

    over = _overrides(overrides)
    if isinstance(config, RunConfig):
        doc: Mapping[str, Any] = yaml_doc(config)
    elif isinstance(config, (str, Path)):
        doc = load_yaml(config)
    else:
        doc = dict(config or {})
    run_dir = fit(build_run_config(doc, over), log=log)
    return load_run(run_dir)


def yaml_doc(cfg: RunConfig) -> dict[str, Any]:
    """A RunConfig as the mapping its YAML holds."""
    import yaml

    return yaml.safe_load(cfg.to_yaml())


__all__ = ["Run", "load_run", "train"]
