"""Frozen dataclass configs; YAML in, YAML out. Precedence: CLI over YAML over dataclass defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

SOURCES = ("nih", "chestmnist", "tfrecord", "folder", "files", "phantom", "cache")


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

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source {self.source!r}: expected one of {', '.join(SOURCES)}")


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing cache parameters."""

    size: int = 224
    mode: str = "pad"  # pad (aspect-preserving, black borders) or crop (centre crop)
    workers: int = 0  # 0: one per CPU core
    force: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("pad", "crop"):
            raise ValueError(f"resize mode {self.mode!r}: expected pad or crop")
        if not 8 <= self.size <= 4096:
            raise ValueError(f"cache size {self.size}: expected 8..4096 pixels")


@dataclass(frozen=True)
class SplitConfig:
    """How to split: by patient (stratified) or the source's official split."""

    method: str = "patient"  # patient or official
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    def fractions(self) -> dict[str, float]:
        """The split fractions as a mapping."""
        return {"train": self.train, "val": self.val, "test": self.test}


def merge(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``cfg`` with the non-None ``overrides`` applied; unknown keys are an error."""
    names = {f.name: f for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown {type(cfg).__name__} key(s) {unknown}; expected {sorted(names)}")
    clean = {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(getattr(cfg, k), tuple) and isinstance(v, (list, str)):
            v = tuple(v) if isinstance(v, list) else tuple(s for s in v.split(",") if s)
        clean[k] = v
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error for a missing file or a non-mapping document."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return doc


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

    def __post_init__(self) -> None:
        if self.init_head not in ("random", "from_pretrained"):
            raise ValueError(f"model.init_head {self.init_head!r}: expected random or from_pretrained")
        if self.init_head == "from_pretrained" and not (self.pretrained and self.name.startswith("xrv:")):
            raise ValueError(
                "model.init_head: from_pretrained needs an xrv:<weights> model with pretrained: true "
                f"(got {self.name}, pretrained: {self.pretrained})"
            )


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
    monitor: str = "macro_auc"  # early-stopping metric: macro_auc, loss, macro_f1, macro_recall
    patience: int = 5  # epochs without improvement before stopping (0: never stop early)
    threshold: float = 0.5  # for F1/precision/recall during training
    freeze: str = "none"  # none, backbone, last_n
    unfreeze_last: int = 0  # with freeze last_n: trainable backbone stages, counted from the top
    bottleneck_epochs: int = 0  # two-stage: head on cached frozen features first, then fine-tune
    rotate: float = 5.0  # augmentation: max degrees
    shift: float = 0.05  # max fraction of the image
    scale: float = 0.05  # max relative zoom
    hflip: bool = False  # left-right flips move the heart: off by default
    steps_per_epoch: int = 0  # cap on batches per epoch (0: the whole training set)
    grad_clip: float = 0.0  # max gradient norm (0: off)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    progress: bool = True

    def __post_init__(self) -> None:
        choices = {
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("none", "exponential", "cosine", "plateau"),
            "loss": ("bce", "weighted_bce", "pos_weight_bce", "focal", "ce"),
            "monitor": ("macro_auc", "loss", "macro_f1", "macro_recall", "micro_auc"),
            "freeze": ("none", "backbone", "last_n"),
            "device": ("auto", "cpu", "cuda"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"train.{key} {getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"train: epochs >= 0, batch_size >= 1 and lr > 0 needed (got {self.epochs}, "
                f"{self.batch_size}, {self.lr})"
            )


@dataclass(frozen=True)
class TriageConfig:
    """The triage operating point stored with a run: target sensitivity on validation and score."""

    target_sensitivity: float = 0.95
    score: str = "auto"  # auto, no_finding, noisy_or, max (see cxrkit.evaluate.triage)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(
                f"triage.target_sensitivity {self.target_sensitivity}: expected a value in (0, 1]"
            )
        if self.score not in ("auto", "no_finding", "noisy_or", "max"):
            raise ValueError(f"triage.score {self.score!r}: expected auto, no_finding, noisy_or or max")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how: split, threshold rule, F-beta, triage target, bootstrap size."""

    split: str = "test"
    threshold: str = "max_f1"  # per-label rule, chosen on val: 0.5, 0.2, max_f1, max_f<beta>, youden, ...
    beta: float = 3.0  # F-beta reported beside F1 (3: recall weighs 9x precision, as triage wants)
    target_sensitivity: float | None = None  # None: the run's stored operating point
    triage_score: str | None = None  # None: the run's stored score (auto, no_finding, noisy_or, max)
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"
    samples: int = 12  # images in the prediction grid
    out: str | None = None  # default: <run>/eval-<split>

    def __post_init__(self) -> None:  # the threshold rule is parsed by evaluate_run before any work
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
    engine: str = "auto"  # torch, onnx, onnx-int8, auto (onnx when the run was exported)
    api_key_file: str | None = None  # else the CXR_API_KEY environment variable; none: no key asked
    max_upload_mb: float = 50.0  # larger bodies get 413
    max_pixels: int = 40_000_000  # larger declared images (decompression bombs) get 413
    body_timeout_s: float = 30.0  # a request body that stalls this long gets 408 (slow clients)
    workers: int = 1  # inference threads; each scores a batch of waiting requests at once
    queue: int = 32  # requests that may wait for a worker; beyond: 503 with Retry-After
    max_batch: int = 16  # most requests scored as one batch
    max_files: int = 32  # most files in one /v1/predict/batch request

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"serve.port {self.port}: expected 1-65535")
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.body_timeout_s <= 0:
            raise ValueError("serve.max_upload_mb, serve.max_pixels and serve.body_timeout_s must be > 0")
        if min(self.workers, self.queue, self.max_batch, self.max_files) < 1:
            raise ValueError("serve.workers, queue, max_batch and max_files must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    """One training run: data, preprocessing, split, model and training, plus where it goes."""

    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    triage: TriageConfig = TriageConfig()
    out: str = "runs"
    name: str = ""
    cache_dir: str = "cxr-out/cache"

    def to_yaml(self) -> str:
        """The resolved config, as saved in every run folder."""
        doc = {k: _plain(dataclasses.asdict(getattr(self, k))) for k in _SECTIONS}
        doc.update(out=self.out, name=self.name, cache_dir=self.cache_dir)
        return yaml.safe_dump(doc, sort_keys=False)


_SECTIONS = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "split": SplitConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "triage": TriageConfig,
}


def build_run_config(doc: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """RunConfig from a YAML mapping and ``section.key`` overrides (CLI wins over YAML over defaults)."""
    doc = {k: dict(v) if isinstance(v, Mapping) else v for k, v in doc.items()}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section in _SECTIONS and key:
            doc.setdefault(section, {})[key] = value
        elif not key and section in ("out", "name", "cache_dir"):
            doc[section] = value
        else:
            raise ValueError(f"override {dotted!r}: expected SECTION.KEY with SECTION in {sorted(_SECTIONS)}")
    unknown = sorted(set(doc) - set(_SECTIONS) - {"out", "name", "cache_dir"})
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; expected {sorted(_SECTIONS)}, out, name")
    parts = {k: merge(cls(), doc.get(k) or {}) for k, cls in _SECTIONS.items()}
    top = {k: str(doc[k]) for k in ("out", "name", "cache_dir") if doc.get(k) is not None}
    return RunConfig(**parts, **top)  # type: ignore[arg-type]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "model.name=resnet18"]`` -> ``{"train.lr": 0.01, ...}`` (YAML-typed values)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=5")
        key, _, raw = item.partition("=")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out
