"""A run folder loaded as a model: weights + ``model.json``, nothing else (no training data needed).

``RunModel.load(path)`` rebuilds the network from the checkpoint's stored arguments (never
downloading weights) and reads the package (input spec, calibration, thresholds, operating
point). ``predict`` takes files, folders or arrays of any size and dtype and returns one row per
input with calibrated probabilities, the triage score and flag, and the top findings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrkit.data.splits import read_split_manifest
from cxrkit.data.transforms import InputSpec, to_model_input, tta_views
from cxrkit.evaluate.drift import pixel_stats
from cxrkit.evaluate.ood import OodReference, ood_decisions
from cxrkit.evaluate.triage import abnormality_score, flag_names, top_findings
from cxrkit.models import create_model
from cxrkit.models.device import resolve_device
from cxrkit.models.net import INTENSITY_MODES, CXRNet
from cxrkit.models.registry import pretrained_normalisation
from cxrkit.run import files
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.data import TrainData
from cxrkit.run.inputs import (
    OUT_OF_DISTRIBUTION,
    UNREADABLE,
    Input,
    PreparedInputs,
    manual_read_note,
    prepare_inputs,
)
from cxrkit.run.onnx import OnnxEngine, open_engine, resolve_engine
from cxrkit.run.ood import load_reference
from cxrkit.run.package import ModelPackage, read_package
from cxrkit.run.package_check import weights_problem


def build_network(model_name: str, model_config: dict, num_labels: int, pretrained: bool = False) -> CXRNet:
    """The run's network from its stored spec; random weights unless ``pretrained`` (runs never download).

    The input normalisation is the one the run trained with (stored as ``input_norm``; for older
    runs, that of the pretrained weights when it started from them), never the untrained default.
    """
    model = create_model(
        model_name,
        num_labels,
        1,
        pretrained,
        grey=model_config.get("grey", "fold"),
        transition=model_config.get("transition", 0),
        hidden=model_config.get("hidden"),
        dropout=model_config.get("dropout"),
        backbone_config=model_config.get("backbone_config"),
    )
    model.intensity = check_intensity(model_config.get("intensity", "none"))
    norm = model_config.get("input_norm")
    if norm is None and model_config.get("pretrained") and not pretrained:
        norm = pretrained_normalisation(model_name)
    if norm is not None:
        model.mean.fill_(float(norm[0]))
        model.std.fill_(float(norm[1]))
    return model


def check_intensity(mode: object) -> str:
    """A stored intensity mode, or a ValueError naming it (a hand-edited model.json)."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity {mode!r}: expected one of {', '.join(INTENSITY_MODES)}")
    return str(mode)


def network_spec(model_config: dict, model: CXRNet) -> dict:
    """The model section stored with a run: its config plus what rebuilds the exact network."""
    spec = {**model_config, "input_norm": [float(model.mean), float(model.std)], "intensity": model.intensity}
    if getattr(model, "backbone_config", None) is not None:
        spec["backbone_config"] = model.backbone_config
    return spec


@dataclass(frozen=True)
class OodAssessment:
    """Per readable study: OOD score (NaN: the run has no reference), in distribution, and why not."""

    scores: np.ndarray
    in_distribution: np.ndarray
    reasons: list[str]
    summary: np.ndarray | None = None  # (K, k) feature summaries for the monitor log (with a reference)
    pixels: np.ndarray | None = None  # (K, 8) drift.pixel_stats of the images, when they were given


@dataclass
class RunModel:
    """A run's best network (eval mode, on ``device``) and its package.

    ``engine``: what computes logits by default: ``torch`` (the network), ``onnx`` or ``onnx-int8``
    (ONNX Runtime on the run's exported model.onnx / model.int8.onnx), ``openvino`` or
    ``openvino-int8`` (model.xml / model.int8.xml; see ``cxr export``).
    Grad-CAM always uses the PyTorch network (it needs gradients).
    """

    path: Path
    model: CXRNet
    package: ModelPackage
    device: torch.device
    engine: str = "torch"
    members: list[RunModel] = field(default_factory=list)  # a K-fold ensemble's fold runs (averaged)
    ood: OodReference | None = None  # model.json's OOD reference (ood.npz); None: a run without one
    _sessions: dict[str, OnnxEngine] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", engine: str = "torch") -> RunModel:
        """Load ``path``/best.pt and model.json; clear errors for a missing, foreign or newer run.

        ``engine``: torch, onnx, onnx-int8, openvino, openvino-int8, or auto (onnx when the run holds a
        current model.onnx, else torch).
        """
        path = files.check_run_folder(Path(path), ())
        if not (path / files.PACKAGE).is_file():  # weights without model.json: read_package says what to run
            files.check_run_folder(path, (files.BEST,))
        pkg = read_package(path)
        if pkg.model_config.get("ensemble"):
            return cls._load_ensemble(path, pkg, device, engine)
        files.check_run_folder(path, (files.BEST,))
        ckpt = load_checkpoint(path / files.BEST)
        problem = weights_problem(pkg, ckpt)
        if problem:  # a model.json that does not describe these weights is never used
            raise ValueError(f"{path}: {problem}; re-run `cxr package {path}` (it needs the run's data)")
        model = build_network(pkg.model_name, pkg.model_config, len(pkg.labels))
        try:
            model.load_state_dict(ckpt["model_state"])
        except RuntimeError as err:
            raise ValueError(
                f"{path / files.BEST}: weights do not fit model {pkg.model_name} ({err})"
            ) from None
        dev = resolve_device(device)
        model.to(dev).eval()
        ood = load_reference(path, pkg.ood) if pkg.ood else None
        run = cls(path, model, pkg, dev, resolve_engine(path, engine), ood=ood)
        if run.engine != "torch":
            run.session(run.engine)  # fail at load, not at the first request
        return run

    @classmethod
    def _load_ensemble(cls, path: Path, pkg: ModelPackage, device: str, engine: str) -> RunModel:
        """A K-fold parent: its fold runs (each a whole run) average their logits; PyTorch only."""
        if engine not in ("torch", "auto"):
            raise ValueError(f"{path}: a K-fold ensemble predicts with PyTorch only (got engine {engine!r})")
        members = [cls.load(path / name, device) for name in pkg.model_config["ensemble"]]
        for m in members:
            if m.labels != pkg.labels or m.spec != pkg.input or m.task != pkg.task:
                raise ValueError(f"{m.path}: labels, task or input differ from the ensemble's model.json")
        return cls(path, members[0].model, pkg, members[0].device, "torch", members, ood=members[0].ood)

    @property
    def tta(self) -> int:
        """Test-time augmentation views averaged by default (``model.tta`` when trained; 0: off)."""
        return int(self.package.model_config.get("tta", 0))

    def session(self, engine: str) -> OnnxEngine:
        """The exported engine (onnx, onnx-int8, openvino, openvino-int8) of this run (created once)."""
        with self._lock:  # the server's workers may ask at once: one session each
            if engine not in self._sessions:
                if engine in ("torch", "auto"):
                    raise ValueError(f"the {engine} engine has no ONNX session of its own")
                self._sessions[engine] = open_engine(self.path, engine)
            return self._sessions[engine]

    @property
    def labels(self) -> tuple[str, ...]:
        """Output labels, in the model's order."""
        return self.package.labels

    @property
    def task(self) -> str:
        """multilabel (sigmoid per label), binary or multiclass (softmax)."""
        return self.package.task

    @property
    def spec(self) -> InputSpec:
        """What the network takes: size, resize mode, channels, value range."""
        return self.package.input

    def logits(
        self, images: np.ndarray, batch_size: int = 64, engine: str | None = None, tta: int | None = None
    ) -> np.ndarray:
        """Raw outputs (N, L) for uint8 images (N, S, S) already prepared by the input spec.

        ``engine``: torch or an exported engine (default: the run's ``engine``). ``tta``: views averaged
        (``data.transforms.tta_views``; default: the run's own, 0 or 1: none). An ensemble averages
        its members' logits.
        """
        return self.outputs(images, batch_size, engine, tta)[0]

    def outputs(
        self, images: np.ndarray, batch_size: int = 64, engine: str | None = None, tta: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, L), pooled penultimate features (N, C)) of prepared uint8 images (N, S, S).

        The features are what the OOD score reads; TTA averages both over the views. An ensemble
        averages its members' logits and takes its first member's features (its OOD reference).
        """
        tta = self.tta if tta is None else int(tta)
        if self.members:
            if engine not in (None, "torch", "auto"):
                raise ValueError(f"{self.path}: a K-fold ensemble predicts with PyTorch only")
            outs = [m.outputs(images, batch_size, "torch", tta) for m in self.members]
            return np.mean([z for z, _ in outs], axis=0), outs[0][1]
        if tta > 1:
            views = [self.outputs(v, batch_size, engine, 0) for v in tta_views(np.asarray(images), tta)]
            return np.mean([z for z, _ in views], axis=0), np.mean([f for _, f in views], axis=0)
        engine = engine or self.engine
        if engine == "auto":
            engine = resolve_engine(self.path, "auto")
        if engine == "torch":
            return self.torch_outputs(images, batch_size)
        if len(images) == 0:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros(
                (0, self.model.pooled_dim), np.float32
            )
        return self.session(engine).outputs(images, batch_size)

    @torch.no_grad()
    def torch_logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``logits`` computed by the PyTorch network on the run's device."""
        return self.torch_outputs(images, batch_size)[0]

    @torch.no_grad()
    def torch_outputs(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(logits, pooled features) computed by the PyTorch network on the run's device."""
        self.model.eval()
        out = np.empty((len(images), len(self.labels)), dtype=np.float32)
        feats = np.empty((len(images), self.model.pooled_dim), dtype=np.float32)
        for s in range(0, len(images), batch_size):
            x = to_model_input(images[s : s + batch_size], self.device)
            f = self.model.pool(self.model.forward_features(x))
            out[s : s + batch_size] = self.model.forward_head(f).float().cpu().numpy()
            feats[s : s + batch_size] = f.float().cpu().numpy()
        return out, feats

    def probs(
        self,
        images: np.ndarray,
        batch_size: int = 64,
        calibrated: bool = True,
        engine: str | None = None,
        tta: int | None = None,
    ) -> np.ndarray:
        """Probabilities (N, L), temperature-calibrated unless ``calibrated=False``."""
        return self.package.probs(self.logits(images, batch_size, engine, tta), calibrated)

    def prepare(
        self,
        inputs: Input | Sequence[Input],
        keep_originals: bool = False,
        progress: bool = False,
        accept_missing_modality: bool = False,
    ) -> PreparedInputs:
        """Decode and resize inputs by the run's input spec (unreadable ones listed with their reason)."""
        return prepare_inputs(inputs, self.spec, keep_originals, progress, accept_missing_modality)

    def predict(
        self,
        inputs: Input | Sequence[Input],
        batch_size: int = 32,
        progress: bool = False,
        top: int = 3,
        engine: str | None = None,
        tta: int | None = None,
        accept_missing_modality: bool = False,
    ) -> pd.DataFrame:
        """A row per input: source, image_id, error, each label's calibrated probability, triage, findings.

        ``engine``: torch, onnx or onnx-int8 (default: the run's ``engine``, set at load). ``tta``:
        test-time augmentation views (default: the run's own). Inputs: see ``run.inputs.expand_inputs``
        (the table has exactly one row per image given).
        """
        prepared = self.prepare(inputs, progress=progress, accept_missing_modality=accept_missing_modality)
        probs, ood = self.score_prepared(prepared, batch_size, engine, tta)
        return self.table(prepared, probs, top, ood)

    def score_prepared(
        self,
        prepared: PreparedInputs,
        batch_size: int = 64,
        engine: str | None = None,
        tta: int | None = None,
        pixels: bool = False,
    ) -> tuple[np.ndarray, OodAssessment]:
        """(calibrated probabilities, OOD assessment) of the readable ``prepared`` inputs; ``pixels``:
        add the images' acquisition statistics (for a monitor log; nothing else reads them)."""
        logits, feats = self.outputs(prepared.images, batch_size, engine, tta)
        headers = [prepared.rows[k].get("header") or {} for k in prepared.ok]
        images = prepared.images if pixels else None
        return self.package.probs(logits), self.assess_ood(feats, logits, headers, images)

    def assess_ood(
        self,
        features: np.ndarray,
        logits: np.ndarray,
        headers: Sequence[dict] = (),
        images: np.ndarray | None = None,
    ) -> OodAssessment:
        """Each study's OOD score and whether it is in distribution (score at or under the stored
        threshold and a DICOM header that fits the training population), with the reason if not.

        A run without a reference (trained before cxrkit stored one: `cxr package` adds it) gives
        NaN scores and applies the header checks alone.
        """
        n = len(logits)
        headers = list(headers) or [{}] * n
        pixels = pixel_stats(images) if images is not None else None
        if self.ood is None:
            inside, reasons = ood_decisions(np.full(n, -np.inf), np.inf, headers, {})
            return OodAssessment(np.full(n, np.nan), inside, reasons, None, pixels)
        scores = self.ood.relative(self.ood.scores(features, logits))  # 1: the stored threshold
        section = (self.members[0].package if self.members else self.package).ood
        inside, reasons = ood_decisions(scores, 1.0, headers, section)
        return OodAssessment(scores, inside, reasons, self.ood.summary(features), pixels)

    def table(
        self, prepared: PreparedInputs, probs: np.ndarray, top: int = 3, ood: OodAssessment | None = None
    ) -> pd.DataFrame:
        """The prediction table of ``prepared`` inputs given their probabilities (rows in input order).

        With ``ood``: columns ``ood_score``, ``in_distribution`` and ``ood_note``; a study out of
        distribution is flagged "out of distribution" (its note says why, "read manually"), never "normal"."""
        n = len(prepared.rows)
        full = np.full((n, len(self.labels)), np.nan)
        full[prepared.ok] = probs
        point = self.package.operating_point
        score = np.full(n, np.nan)
        if len(probs):
            score[prepared.ok], _ = abnormality_score(probs, self.labels, point.score)
        notes = [""] * n
        ood_score = np.full(n, np.nan)
        inside = np.full(n, None, dtype=object)
        outside = np.zeros(n, dtype=bool)
        ood_notes = [""] * n
        if ood is not None and len(prepared.ok):
            ood_score[prepared.ok] = ood.scores
            inside[prepared.ok] = ood.in_distribution.astype(bool)
            outside[prepared.ok] = ~ood.in_distribution.astype(bool)
            for k, ok, why in zip(prepared.ok, ood.in_distribution, ood.reasons, strict=True):
                if not ok:  # scored, but read manually: the note says why
                    ood_notes[k] = manual_read_note(OUT_OF_DISTRIBUTION, why)
        flag = flag_names(score, point.threshold, outside)  # the one decision, OOD included
        for k, r in enumerate(prepared.rows):
            if r["error"]:  # never scored: the flag says why, so no study silently reads as normal
                flag[k] = r.get("status") or UNREADABLE
                notes[k] = manual_read_note(flag[k], r["error"])
            elif np.isnan(score[k]):  # a model that gives NaN: not a normal study either
                notes[k] = manual_read_note(flag[k], "the model gave no finite score")
        tops = np.full(n, "", dtype=object)
        if len(probs):
            tops[prepared.ok] = top_findings(probs, self.labels, top)
        frame = pd.DataFrame(
            {
                "source": [r["source"] for r in prepared.rows],
                "image_id": [r["image_id"] for r in prepared.rows],
                "error": notes,
            }
        )
        for j, lab in enumerate(self.labels):
            frame[lab] = full[:, j]
        frame["triage_score"] = score
        frame["triage_flag"] = flag
        if ood is not None:
            frame["ood_score"] = ood_score
            frame["in_distribution"] = inside
            frame["ood_note"] = ood_notes
        frame["top_findings"] = tops
        return frame


@dataclass
class SplitPredictions:
    """Predictions on a split of a run's data: rows of ``meta`` align with ``targets`` and ``probs``."""

    part: str
    meta: pd.DataFrame
    targets: np.ndarray
    probs: np.ndarray  # calibrated
    raw: np.ndarray  # before calibration
    data: TrainData
    index: np.ndarray  # rows of the cache
    ood: OodAssessment | None = None  # OOD scores of these images (None: no reference, or K-fold val)

    def image(self, i: int) -> np.ndarray:
        """The cached (S, S) uint8 image of row ``i``."""
        return np.asarray(self.data.cache.images[self.index[i]])

    @property
    def truth_and_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets, calibrated probabilities): what thresholds and operating points are chosen from."""
        return self.targets, self.probs

    val = truth_and_probs  # the old name (``val.val`` read as the validation split twice)


Scorer = Callable[[np.ndarray], np.ndarray]  # prepared uint8 images (N, S, S) -> logits (N, L)


def split_scorers(run: RunModel, data: TrainData, part: str) -> list[tuple[np.ndarray, Scorer]]:
    """(sorted cache rows, logits function) pairs that together score split ``part`` of the run's data.

    One pair for an ordinary run. Every caller that scores a split (and may change its images first,
    as ``cxr robustness`` does) goes through this, so each image is scored by the model meant for it.
    """
    if len(data.partition.get(part, [])) == 0:
        have = ", ".join(k for k, v in data.partition.items() if len(v)) or "none"
        raise ValueError(f"{run.path}: the run's split has no {part!r} images (it has: {have})")
    if tuple(data.labels) != tuple(run.labels):
        raise ValueError(f"{run.path}: the data's labels {data.labels} differ from the model's {run.labels}")
    rows = np.sort(data.partition[part])
    if not run.members or part != "val":
        return [(rows, run.logits)]
    ids = data.cache.meta["image_id"].astype(str).to_numpy()
    pairs = []
    for member in run.members:  # out of fold: each fold's images are scored by the model that never saw them
        own = read_split_manifest(member.path / files.SPLIT)
        own = set(own.loc[own["split"] == "val", "image_id"].astype(str))
        pairs.append((rows[np.isin(ids[rows], list(own))], member.logits))
    covered = np.concatenate([r for r, _ in pairs])
    if len(covered) != len(rows) or not np.array_equal(np.sort(covered), rows):
        raise ValueError(
            f"{run.path}: its folds' validation images ({len(covered):,}, "
            f"{len(np.unique(covered)):,} distinct) are not exactly its {len(rows):,} out-of-fold images; "
            "the fold runs do not match the ensemble's split"
        )
    return pairs


def split_logits(
    run: RunModel, data: TrainData, part: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted cache rows, logits) of split ``part``: each image scored by its model, a chunk at a time."""
    pairs = split_scorers(run, data, part)
    idx = np.sort(np.concatenate([rows for rows, _ in pairs]))
    logits = np.empty((len(idx), len(run.labels)), dtype=np.float32)
    for rows, score in pairs:
        for s in range(0, len(rows), batch_size * 8):  # bounded memory on a large split
            chunk = rows[s : s + batch_size * 8]
            logits[np.searchsorted(idx, chunk)] = score(np.asarray(data.cache.images[chunk]))
    return idx, logits


def predict_split(run: RunModel, data: TrainData, part: str, batch_size: int = 64) -> SplitPredictions:
    """Calibrated and raw probabilities on split ``part`` (train, val or test) of the run's data.

    A K-fold ensemble's ``val`` is scored out of fold (see ``split_scorers``).
    """
    ood = None
    if run.ood is not None and not (run.members and part == "val"):  # one network scores every image
        pairs = split_scorers(run, data, part)
        idx = pairs[0][0]
        outs = [
            run.outputs(np.asarray(data.cache.images[idx[s : s + batch_size * 8]]), batch_size)
            for s in range(0, len(idx), batch_size * 8)
        ]
        logits = np.concatenate([z for z, _ in outs])
        ood = run.assess_ood(np.concatenate([f for _, f in outs]), logits)
    else:
        idx, logits = split_logits(run, data, part, batch_size)
    meta = data.cache.meta.iloc[idx].reset_index(drop=True)
    return SplitPredictions(
        part,
        meta,
        data.targets[idx],
        run.package.probs(logits),
        run.package.probs(logits, False),
        data,
        idx,
        ood,
    )
