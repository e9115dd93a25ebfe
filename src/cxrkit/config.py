"""Frozen dataclass configs; YAML in, YAML out. Precedence: CLI over YAML over dataclass defaults.

Every value is checked against its field's type whenever a config is made (YAML, CLI override or code)
and coerced only where the meaning is unambiguous; anything else is refused with the key, the value and
the expected type, e.g. ``train.epochs: 'ten' is not an integer (expected int, e.g. epochs: 10)``.

- int: an integer or a string of digits (``"32"`` -> 32); 1.5, 2.0, ``"1e3"``, ``"ten"`` and booleans
  are refused.
- float: a number or a numeric string (``"1e-3"`` -> 0.001: YAML 1.1 reads ``1e-3`` without a dot as a
  string); booleans, nan and inf are refused.
- bool: true/false, 1/0, or the strings true/false, yes/no, on/off, 1/0 in any case (a quoted ``"no"`` is
  false, never true); anything else is refused.
- str: a string. An unquoted YAML number or date is kept exactly as written (``name: 1.10`` is "1.10",
  ``010`` stays "010", ``1:30`` stays "1:30"; YAML 1.1 alone would make them 1.1, 8 and 90); a number
  given in code becomes ``str(number)``. Booleans are refused, since YAML reads an unquoted
  yes/no/on/off as one: quote such a value.
- ``name`` (the run folder) must be a plain folder name: no ``/`` or ``\\``, not ``.`` or ``..``, not
  blank; "" (the default) means a time-stamped name.
- tuple of str: a list of strings, or one comma-separated string.
- ``X | None``: null, or a value coerced as X.

A run config must name its data (``data: {source: ...}``): an empty config is refused rather than
silently training on the synthetic phantoms.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any, TypeVar

import yaml

from cxrkit.config_check import coerce_value, parse_yaml, short_repr, type_check, yaml_example
from cxrkit.config_check import load_yaml as load_yaml  # re-exported: callers read configs from here

T = TypeVar("T")

INTENSITY = ("none", "standardize", "equalize")  # per-image input standardization (models.net.intensity_op)
SCORE_METHODS = ("auto", "no_finding", "noisy_or", "max")  # triage abnormality scores (evaluate.triage)
# THE table of data sources: name -> "module:function" building it from a DataConfig, in the source's
# own file (imported only when used). Adding a source is its file plus one line here.
SOURCES: dict[str, str] = {
    "nih": "cxrkit.data.nih:from_config",
    "chestmnist": "cxrkit.data.chestmnist:from_config",
    "tfrecord": "cxrkit.data.tfrecord:from_config",
    "folder": "cxrkit.data.folder:labelled_from_config",
    "files": "cxrkit.data.folder:files_from_config",
    "table": "cxrkit.data.table:from_config",
    "phantom": "cxrkit.data.synthetic:from_config",
    "cache": "cxrkit.data.cache:from_config",
}

_TOP = ("out", "name", "cache_dir")  # RunConfig's keys outside the sections
_PHANTOM_KEYS = frozenset({"n", "size", "seed", "images_per_patient"})  # meaningful without a source


@dataclass(frozen=True)
class DataConfig:
    """Which data to load. ``path`` is the image folder, .npz, shard folder or cache folder."""

    source: str = "phantom"
    path: str | None = None
    csv: str | None = None  # NIH Data_Entry CSV (default: in the folder, else torchxrayvision's copy)
    bbox_csv: str | None = None  # NIH BBox_List_2017.csv (same defaults)
    views: tuple[str, ...] = ()  # NIH: keep only these view positions (e.g. PA)
    size: int = 64  # phantom image size / ChestMNIST file size
    n: int = 600  # phantoms: number of images
    images_per_patient: int = 1  # phantoms: consecutive images sharing a patient ID
    seed: int = 0
    split: str = "all"  # ChestMNIST: all, train, val or test
    download: bool = False  # ChestMNIST: download when missing
    accept_missing_modality: bool = False  # DICOMs without a Modality tag are read (else skipped, listed)

    def __post_init__(self) -> None:
        type_check(self, "data")
        if self.source not in SOURCES:
            raise ValueError(f"data source {self.source!r}: expected one of {', '.join(SOURCES)}")
        if self.split not in ("all", "train", "val", "test"):
            raise ValueError(f"data.split {self.split!r}: expected all, train, val or test")
        if min(self.size, self.n, self.images_per_patient) < 1:
            raise ValueError(
                f"data.size, data.n and data.images_per_patient must be >= 1 (got {self.size}, {self.n}, "
                f"{self.images_per_patient})"
            )


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing cache parameters."""

    size: int = 224
    mode: str = "pad"  # pad (aspect-preserving, black borders) or crop (centre crop)
    # per-image intensity standardization at the model's input, stored in the run's input spec:
    # none, standardize (zero mean, unit variance) or equalize (histogram equalization)
    intensity: str = "none"
    workers: int = 0  # 0: one per CPU core
    force: bool = False

    def __post_init__(self) -> None:
        type_check(self, "prepare")
        if self.mode not in ("pad", "crop"):
            raise ValueError(f"resize mode {self.mode!r}: expected pad or crop")
        if self.intensity not in INTENSITY:
            raise ValueError(f"prepare.intensity {self.intensity!r}: expected one of {', '.join(INTENSITY)}")
        if not 8 <= self.size <= 4096:
            raise ValueError(f"cache size {self.size}: expected 8..4096 pixels")
        if self.workers < 0:
            raise ValueError(f"prepare.workers {self.workers}: expected >= 0 (0: one per CPU core)")


@dataclass(frozen=True)
class PartitionConfig:
    """How to split the rows into train/val/test (the partition; "split" names one part, as in
    ``--split test``): by patient (stratified), the source's official split, or patient-grouped K folds.

    ``kfold``: ``test`` of the patients are held out, the rest fall into ``folds`` folds; training
    makes one run per fold (validating on that fold) and a parent run that predicts with the folds'
    average, its thresholds fitted on the out-of-fold predictions. ``fold`` (set by training) picks
    one fold's partition: 0 means the parent. A run's YAML may still call this section ``split``.
    """

    method: str = "patient"  # patient, official or kfold
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0
    folds: int = 5  # kfold: number of folds
    fold: int = 0  # kfold: this run's fold (1..folds), 0: the parent (all folds)

    def __post_init__(self) -> None:
        type_check(self, "partition")
        if self.method not in ("patient", "official", "kfold"):
            raise ValueError(f"partition.method {self.method!r}: expected patient, official or kfold")
        if self.method == "kfold" and not (2 <= self.folds <= 20 and 0 <= self.fold <= self.folds):
            raise ValueError(
                f"partition.folds {self.folds}, partition.fold {self.fold}: expected 2..20 folds and a fold "
                f"in 0..folds (0: all)"
            )
        if self.method == "kfold" and not 0.0 <= self.test < 1.0:
            raise ValueError(f"partition.test {self.test}: expected a held-out share in [0, 1) for kfold")
        if self.method == "kfold":
            return  # train and val come from the folds
        fractions = self.fractions()
        bad = {k: v for k, v in fractions.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"partition fractions {bad}: expected values in [0, 1]")
        total = sum(fractions.values())
        if total > 1 + 1e-6 or (self.method == "patient" and abs(total - 1) > 1e-6):
            raise ValueError(
                f"partition fractions {fractions} sum to {total:g}: expected train + val + test = 1"
            )

    def fractions(self) -> dict[str, float]:
        """The train/val/test fractions as a mapping."""
        return {"train": self.train, "val": self.val, "test": self.test}


def merge(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``cfg`` with the non-None ``overrides`` applied, each coerced to its field's type.

    Unknown keys, a non-mapping and values of the wrong type are errors.
    """
    cls = type(cfg).__name__
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{cls}: {short_repr(overrides)} is not a mapping of keys to values")
    names = [f.name for f in dataclasses.fields(cfg)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in overrides if k not in names)
    if unknown:
        raise ValueError(
            f"unknown {cls} key(s) {unknown}; expected {sorted(names)}{_did_you_mean(unknown, names)}"
        )
    clean = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


def _did_you_mean(unknown: list[str], names: list[str]) -> str:
    close = [m for k in unknown for m in difflib.get_close_matches(k, names, n=1)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def to_yaml(**sections: Any) -> str:
    """Dump dataclass configs as YAML sections (saved beside every run)."""
    return yaml.safe_dump({k: _plain(dataclasses.asdict(v)) for k, v in sections.items()}, sort_keys=False)


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class ModelConfig:
    """Which network: a registered name or ``timm:<name>``, and its head."""

    name: str = "cnn3_32_64_128_bn"
    pretrained: bool = False
    grey: str = "fold"  # fold the RGB stem to one channel, or repeat the grey image 3x
    transition: int = 0  # channels of an extra 3x3 conv before pooling (0: none)
    hidden: int | None = None  # hidden dense layer (None: the preset's)
    dropout: float | None = None  # head dropout (None: the preset's)
    init_head: str = "random"  # random, or from_pretrained: xrv: outputs whose label names match start there
    tta: int = 0  # test-time augmentation: views averaged at prediction (0 or 1: off; up to 5), stored

    def __post_init__(self) -> None:
        type_check(self, "model")
        if self.grey not in ("fold", "repeat"):
            raise ValueError(f"model.grey {self.grey!r}: expected fold or repeat")
        if self.init_head not in ("random", "from_pretrained"):
            raise ValueError(f"model.init_head {self.init_head!r}: expected random or from_pretrained")
        if self.init_head == "from_pretrained" and not (self.pretrained and self.name.startswith("xrv:")):
            raise ValueError(
                "model.init_head: from_pretrained needs an xrv:<weights> model with pretrained: true "
                f"(got {self.name}, pretrained: {self.pretrained})"
            )
        if self.transition < 0 or (self.hidden is not None and self.hidden < 0):
            raise ValueError(
                f"model.transition and model.hidden must be >= 0 (got {self.transition}, {self.hidden})"
            )
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout {self.dropout}: expected a value in [0, 1)")
        if not 0 <= self.tta <= 5:
            raise ValueError(f"model.tta {self.tta}: expected 0..5 views (0: off)")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults suit a small CNN on CPU."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam, adamw, sgd (with momentum)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"  # none, exponential (lr0 * 0.1 ** (epoch / decay_epochs)), cosine, plateau
    decay_epochs: float = 10.0
    warmup_epochs: int = 0
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    loss: str = "bce"  # bce, weighted_bce (per batch), pos_weight_bce (prevalence), focal, ce
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    labels: tuple[str, ...] = ()  # train on these labels only (default: all of the dataset's)
    # early-stopping and model-selection metric: macro_auc, loss, macro_f1, macro_recall, micro_auc, or
    # corrupt_auc: macro AUC of the validation images each under one seeded acquisition shift (data.shifts)
    monitor: str = "macro_auc"
    patience: int = 5  # epochs without improvement before stopping (0: never stop early)
    threshold: float = 0.5  # for F1/precision/recall during training
    freeze: str = "none"  # none, backbone, last_n
    unfreeze_last: int = 0  # with freeze last_n: trainable backbone stages, counted from the top
    bottleneck_epochs: int = 0  # two-stage: head on cached frozen features first, then fine-tune
    rotate: float = 5.0  # augmentation: max degrees
    shift: float = 0.05  # max fraction of the image
    scale: float = 0.05  # max relative zoom
    hflip: bool = False  # left-right flips move the heart: off by default
    photometric: float = 0.0  # share of training images under a random photometric shift (data.shifts)
    photometric_severity: int = 3  # highest severity (1..5) of those shifts
    ema: float = 0.0  # weight averaging: decay of an exponential moving average of the weights (0: off)
    steps_per_epoch: int = 0  # cap on batches per epoch (0: the whole training set)
    grad_clip: float = 0.0  # max gradient norm (0: off)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    progress: bool = True

    def __post_init__(self) -> None:
        type_check(self, "train")
        choices = {
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("none", "exponential", "cosine", "plateau"),
            "loss": ("bce", "weighted_bce", "pos_weight_bce", "focal", "ce"),
            "monitor": ("macro_auc", "loss", "macro_f1", "macro_recall", "micro_auc", "corrupt_auc"),
            "freeze": ("none", "backbone", "last_n"),
            "device": ("auto", "cpu", "cuda"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"train.{key} {getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        if (
            self.epochs < 0 or self.batch_size < 1 or not 0 < self.lr <= 1e30
        ):  # float32 optimisers (Adam divides lr)
            raise ValueError(
                f"train: epochs >= 0, batch_size >= 1 and 0 < lr <= 1e30 needed (got {self.epochs}, "
                f"{self.batch_size}, {self.lr})"
            )
        if self.epochs == 0 and self.bottleneck_epochs == 0:
            raise ValueError(
                "train.epochs 0 with no train.bottleneck_epochs: nothing would be trained; "
                "set train.epochs >= 1 (or train.bottleneck_epochs for a head on frozen features)"
            )
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Values no run can mean: negative counts and magnitudes, fractions outside their interval."""
        non_negative = (
            "weight_decay",
            "warmup_epochs",
            "plateau_patience",
            "focal_gamma",
            "patience",
            "unfreeze_last",
            "bottleneck_epochs",
            "rotate",
            "shift",
            "scale",
            "steps_per_epoch",
            "grad_clip",
        )
        negative = [f"train.{k} {getattr(self, k)}" for k in non_negative if getattr(self, k) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)}: expected >= 0")
        bounded = {
            "momentum": (self.momentum, 0.0, 1.0),
            "threshold": (self.threshold, 0.0, 1.0),
            "plateau_factor": (self.plateau_factor, 0.0, 1.0),
            "focal_alpha": (self.focal_alpha, 0.0, 1.0),
            "photometric": (self.photometric, 0.0, 1.0),
            "ema": (self.ema, 0.0, 0.99999),
        }
        for key, (v, lo, hi) in bounded.items():
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"train.{key} {v}: expected a value in [{lo:g}, {hi:g}]")
        if not 1 <= self.photometric_severity <= 5:
            raise ValueError(f"train.photometric_severity {self.photometric_severity}: expected 1..5")
        if not self.decay_epochs > 0:
            raise ValueError(f"train.decay_epochs {self.decay_epochs}: expected > 0")


@dataclass(frozen=True)
class TriageConfig:
    """The triage operating point stored with a run: target sensitivity on validation and score."""

    target_sensitivity: float = 0.95
    score: str = "auto"  # auto, no_finding, noisy_or, max (see cxrkit.evaluate.triage)

    def __post_init__(self) -> None:
        type_check(self, "triage")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(
                f"triage.target_sensitivity {self.target_sensitivity}: expected a value in (0, 1]"
            )
        if self.score not in SCORE_METHODS:
            raise ValueError(f"triage.score {self.score!r}: expected auto, no_finding, noisy_or or max")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how: split, threshold rule, F-beta, triage target, bootstrap size."""

    split: str = "test"
    threshold: str = "max_f1"  # per-label rule, chosen on val: 0.5, 0.2, max_f1, max_f<beta>, youden, ...
    beta: float = 3.0  # F-beta reported beside F1 (3: recall weighs 9x precision, as triage wants)
    target_sensitivity: float | None = None  # None: the run's stored operating point
    score_method: str | None = None  # None: the run's stored abnormality score (one of SCORE_METHODS)
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"
    samples: int = 12  # images in the prediction grid
    out: str | None = None  # default: <run>/eval-<split>
    # the old name of score_method ("triage_score" is also the numeric column of every table): accepted
    triage_score: InitVar[str | None] = None

    def __post_init__(self, triage_score: str | None) -> None:  # the rule is parsed by evaluate_run
        if triage_score is not None and self.score_method is None:
            object.__setattr__(self, "score_method", triage_score)
        type_check(self, "eval")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split {self.split!r}: expected train, val or test")
        if self.target_sensitivity is not None and not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target sensitivity {self.target_sensitivity}: expected a value in (0, 1]")
        if self.n_boot < 0 or self.beta <= 0:
            raise ValueError("n_boot must be >= 0 and beta > 0")


@dataclass(frozen=True)
class ServeConfig:
    """``cxr serve``: where to listen, which engine, and the limits that keep the service up."""

    host: str = "127.0.0.1"  # this machine only, unless told otherwise
    port: int = 8000
    engine: str = "auto"  # torch, onnx, onnx-int8, openvino, openvino-int8, auto (onnx when exported)
    api_key_file: str | None = None  # else the CXR_API_KEY environment variable; none: no key asked
    max_upload_mb: float = 50.0  # larger bodies get 413
    max_pixels: int = 50_000_000  # larger declared images (decompression bombs) get 413
    body_timeout_s: float = 30.0  # a request body that stalls this long gets 408 (slow clients)
    workers: int = 1  # inference threads; each scores a batch of waiting requests at once
    queue: int = 32  # requests that may wait for a worker; beyond: 503 with Retry-After
    max_batch: int = 16  # most requests scored as one batch
    max_files: int = 32  # most files in one /v1/predict/batch request
    accept_missing_modality: bool = False  # score DICOMs without a Modality tag (else 422 not_assessable)
    monitor: str | None = None  # a folder: every scored study appended to its monitor.jsonl (cxr monitor)
    monitor_window: int = 200  # studies in the window behind the /metrics drift gauges
    feedback: str | None = None  # SQLite file keeping predictions and readers' verdicts; none: nothing kept
    keep_images: str | None = None  # a folder: uploads kept there (by hash) so feedback can become labels
    reader: str | None = None  # the reader's name stored with feedback (a one-reader deployment)
    reader_header: str | None = None  # a header an authenticating proxy sets to the reader (trusted then)
    show_patient_id: bool = False  # the viewer's header panel shows the patient's name and ID

    def __post_init__(self) -> None:
        type_check(self, "serve")
        if self.keep_images and not self.feedback:
            raise ValueError("serve.keep_images needs serve.feedback: images are kept only to become labels")
        if self.monitor_window < 20:
            raise ValueError(f"serve.monitor_window {self.monitor_window}: expected at least 20 studies")
        if not 0 < self.port < 65536:
            raise ValueError(f"serve.port {self.port}: expected 1-65535")
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.body_timeout_s <= 0:
            raise ValueError("serve.max_upload_mb, serve.max_pixels and serve.body_timeout_s must be > 0")
        if min(self.workers, self.queue, self.max_batch, self.max_files) < 1:
            raise ValueError("serve.workers, queue, max_batch and max_files must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    """One training run: data, preprocessing, partition, model and training, plus where it goes."""

    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    triage: TriageConfig = TriageConfig()
    out: str = "runs"
    name: str = ""
    cache_dir: str = "cxr-out/cache"

    def __post_init__(self) -> None:
        type_check(self, "")
        check_run_name(self.name)

    def to_yaml(self) -> str:
        """The resolved config, as saved in every run folder."""
        doc = {k: _plain(dataclasses.asdict(getattr(self, k))) for k in _SECTIONS}
        doc.update(out=self.out, name=self.name, cache_dir=self.cache_dir)
        return yaml.safe_dump(doc, sort_keys=False)


def check_run_name(name: str) -> None:
    """Refuse a run ``name`` that is not one plain folder name ("" is fine: a time-stamped name)."""
    if name == "":
        return
    why = ""
    if not name.strip():
        why = "is blank"
    elif "/" in name or "\\" in name:
        why = "is a path, not a folder name"
    elif name.strip() in (".", ".."):
        why = "names the output folder itself or its parent"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "has a control character"
    if why:
        raise ValueError(
            f"name: {short_repr(name)} {why} (expected a plain folder name such as name: baseline, "
            "without / or \\, or none for a time-stamped name)"
        )


SplitConfig = PartitionConfig  # its old name, for code written against it
OLD_SECTIONS = {"split": "partition"}  # old section name -> new: saved configs and runs still load

_SECTIONS = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "partition": PartitionConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "triage": TriageConfig,
}


def build_run_config(
    doc: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str | None = None
) -> RunConfig:
    """RunConfig from a YAML mapping and ``section.key`` overrides (CLI wins over YAML over defaults).

    ``source`` (the YAML's path) prefixes errors in the mapping; errors in overrides say ``override``.
    A config without a ``data`` section is refused: it would silently train on synthetic phantoms.
    """
    where = f"{source}: " if source else ""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}expected a mapping of sections {sorted(_SECTIONS)}, got {short_repr(doc)}")
    doc, overrides = _renamed(doc, where), _renamed(overrides or {}, "override ", dotted=True)
    unknown = sorted(str(k) for k in doc if k not in _SECTIONS and k not in _TOP)
    if unknown:
        raise ValueError(
            f"{where}unknown config section(s) {unknown}; expected {sorted(_SECTIONS)}, out, name, cache_dir"
        )
    given = {name: _section(doc.get(name), name, where) for name in _SECTIONS}
    top: dict[str, Any] = {k: (doc[k], where) for k in _TOP if doc.get(k) is not None}
    over: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for dotted, value in (overrides or {}).items():
        section, _, key = str(dotted).partition(".")
        if section in _SECTIONS and key:
            over[section][key] = value
        elif not key and section in _TOP:
            if value is not None:
                top[section] = (value, "override ")
        else:
            raise ValueError(f"override {dotted!r}: expected SECTION.KEY with SECTION in {sorted(_SECTIONS)}")
    parts = {}
    for name, cls in _SECTIONS.items():
        values = {**_typed(cls, given[name], name, where), **_typed(cls, over[name], name, "override ")}
        try:
            parts[name] = merge(cls(), values)
        except ValueError as err:  # a range or a combination: blame the file unless overrides took part
            raise ValueError(f"{'' if over[name] else where}{err}") from None
    _require_data({**given["data"], **over["data"]}, where)  # after the values: their errors are sharper
    hints = typing.get_type_hints(RunConfig)
    for key, (value, origin) in top.items():
        try:
            top[key] = coerce_value(value, hints[key], key, yaml_example(getattr(RunConfig, key), str))
            if key == "name":
                check_run_name(top[key])
        except ValueError as err:
            raise ValueError(f"{origin}{err}") from None
    return RunConfig(**parts, **top)  # type: ignore[arg-type]


def _renamed(doc: Mapping[str, Any], where: str, dotted: bool = False) -> dict[str, Any]:
    """``doc`` with old section names (``split``) under their new ones; both given is refused."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        section, dot, rest = str(key).partition(".") if dotted else (key, "", "")
        new = f"{OLD_SECTIONS.get(section, section)}{dot}{rest}" if isinstance(section, str) else key
        if new in out or (new != key and new in doc):
            raise ValueError(f"{where}{key!r} and {new!r} both given: {key} is the old name of {new}")
        out[new] = value
    return out


def _section(value: Any, name: str, where: str) -> dict[str, Any]:
    """A section of the YAML as a dict (null: empty), or a clear error for a scalar or a list."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}{name}: {short_repr(value)} is not a section (expected a mapping of {name} keys, "
            f"e.g. {name}: {{key: value}})"
        )
    return dict(value)


def _typed(cls: type, values: Mapping[str, Any], section: str, where: str) -> dict[str, Any]:
    """``values`` of one section coerced to ``cls``'s field types; ``where`` prefixes any error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ValueError(
            f"{where}unknown {cls.__name__} key(s) {unknown}; expected {sorted(fields)}"
            f"{_did_you_mean(unknown, list(fields))}"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        example = yaml_example(fields[key].default, hints[key])
        try:
            out[key] = coerce_value(value, hints[key], f"{section}.{key}", example)
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None
    return out


def _require_data(data: Mapping[str, Any], where: str) -> None:
    """A run must say what it trains on: no data section, or a path without a source, is refused."""
    if not data:
        raise ValueError(
            f"{where}no data section: say what to train on, e.g. data: {{source: folder, path: images/}} "
            "(data.source=... on the command line; data: {source: phantom} for synthetic phantoms)"
        )
    if "source" not in data:
        real = sorted(f"data.{k}" for k in data if k not in _PHANTOM_KEYS)
        if real:
            raise ValueError(
                f"{where}data.source missing: {', '.join(real)} given, but without a source the run would "
                f"use synthetic phantoms; expected data.source: one of {', '.join(SOURCES)}"
            )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "model.name=resnet18"]`` -> ``{"train.lr": 0.01, ...}`` (YAML-typed values)."""
    out = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=5")
        out[key.strip()] = parse_yaml(raw, f"override {key.strip()}", marks=False) if raw.strip() else None
    return out
