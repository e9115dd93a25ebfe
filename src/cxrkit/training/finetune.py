"""``cxr train --init-from RUN``: a new run that starts from RUN's best weights (fine-tuning).

What the weights need comes from RUN and is never overridden: the network (RUN's model name and
stored network spec: head sizes, input normalisation, backbone config), the label list in RUN's
order (the head is kept: labels the new data lacks are unknown there, NaN, which every loss masks;
the data's labels RUN lacks are dropped; both are logged) and the input spec (``prepare.size``,
``prepare.mode``, ``prepare.intensity``). A setting that contradicts them is refused, naming it; only
``model.tta`` (prediction-time views) may change. The data, partition and training schedule are the
new run's own; the triage section defaults to RUN's. The new run's ``init.json`` (``run.lineage``)
names RUN and the sha256 of its best.pt, so every fine-tuned model is traceable to its parent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrkit.config import OLD_SECTIONS, ModelConfig, RunConfig, build_run_config
from cxrkit.data.transforms import InputSpec
from cxrkit.labels import try_canonical_label
from cxrkit.models.net import CXRNet
from cxrkit.outputs import read_json
from cxrkit.run import files
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.data import Log, TrainData, load_run_config
from cxrkit.run.lineage import Lineage, read_lineage
from cxrkit.run.model import build_network
from cxrkit.run.onnx import weights_digest

NETWORK_FIELDS = ("grey", "transition", "hidden", "dropout")  # model keys the stored network fixes
INPUT_FIELDS = ("size", "mode", "intensity")  # prepare keys the input spec fixes


@dataclass(frozen=True)
class Parent:
    """The run a fine-tuned run starts from: its weights' digest, network spec, labels, task and input."""

    path: Path
    digest: str  # sha256 of the parent's best.pt
    model_name: str
    model_config: dict  # the stored network spec (run.model.network_spec)
    labels: tuple[str, ...]
    task: str
    input: InputSpec
    state: dict | None = None  # best.pt's weights; None for a resumed fine-tuned run (its last.pt has them)

    def network(self) -> CXRNet:
        """The parent's network, with its best weights when they were loaded (never downloads)."""
        model = build_network(self.model_name, self.model_config, len(self.labels))
        if self.state is not None:
            try:
                model.load_state_dict(self.state)
            except RuntimeError as err:
                raise ValueError(
                    f"{self.path / files.BEST}: weights do not fit their stored network ({err})"
                ) from None
        return model


def load_parent(run_dir: str | Path) -> Parent:
    """RUN's best weights and what they need, from its best.pt; a clear error for what cannot be a parent."""
    path = files.check_run_folder(Path(run_dir), ())
    if not (path / files.BEST).is_file() and (path / files.PACKAGE).is_file():
        members = read_json(path / files.PACKAGE).get("model", {}).get("config", {}).get("ensemble")
        if members:
            raise ValueError(
                f"--init-from {path}: a K-fold ensemble has no weights of its own; start from one of its "
                f"fold runs, e.g. {path / members[0]}"
            )
    files.check_run_folder(path, (files.BEST,))
    ckpt = load_checkpoint(path / files.BEST)
    lacking = [k for k in ("model_name", "model_config", "labels", "input") if k not in ckpt]
    if lacking:
        raise ValueError(
            f"{path / files.BEST}: no {', '.join(lacking)} stored (a checkpoint from an older cxrkit): "
            "it cannot seed a fine-tuned run"
        )
    return Parent(
        path=path.resolve(),
        digest=weights_digest(path),
        model_name=str(ckpt["model_name"]),
        model_config=dict(ckpt["model_config"]),
        labels=tuple(str(x) for x in ckpt["labels"]),
        task=str(ckpt.get("task", "multilabel")),
        input=InputSpec.from_dict(ckpt["input"]),
        state=ckpt["model_state"],
    )


def resumed_parent(run_dir: str | Path) -> Parent | None:
    """A fine-tuned run's parent as its init.json records it (weights: the run's own), else None."""
    lineage = read_lineage(run_dir)
    if lineage is None:
        return None
    return Parent(
        path=Path(lineage.init_from),
        digest=lineage.parent_weights_sha256,
        model_name=lineage.model_name,
        model_config=lineage.model_config,
        labels=lineage.labels,
        task=lineage.task,
        input=InputSpec.from_dict(lineage.input),
    )


def _given(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> set[str]:
    """The ``section.key`` names a YAML mapping and command-line overrides set."""
    keys = {str(k) for k in overrides}
    for section, values in doc.items():
        if isinstance(values, Mapping):
            keys |= {f"{OLD_SECTIONS.get(section, section)}.{k}" for k in values}
    return keys


def finetune_config(
    parent: Parent,
    doc: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> RunConfig:
    """The new run's config: ``doc`` and ``overrides`` (CLI over YAML) over RUN's network, input and triage.

    Whatever the user did not set is RUN's; what they set is checked by ``check_finetune``.
    """
    overrides = dict(overrides or {})
    given = _given(doc, overrides)
    spec = parent.model_config
    inherited: dict[str, Any] = {
        "model.name": parent.model_name,
        "model.pretrained": False,  # the weights are RUN's: nothing is downloaded
        "model.init_head": "random",  # the head too is RUN's (not a published classifier's)
        **{f"model.{k}": spec.get(k) for k in (*NETWORK_FIELDS, "tta") if k in spec},
        **{f"prepare.{k}": getattr(parent.input, k) for k in INPUT_FIELDS},
    }
    triage = load_run_config(parent.path).triage
    inherited |= {f"triage.{f.name}": getattr(triage, f.name) for f in dataclasses.fields(triage)}
    kept = {k: v for k, v in inherited.items() if k not in given}
    cfg = build_run_config(doc, {**kept, **overrides}, source)
    check_finetune(cfg, parent)
    return cfg


def check_finetune(cfg: RunConfig, parent: Parent) -> None:
    """Refuse a config that contradicts RUN's network, labels or input spec, naming the setting."""
    where = f"--init-from {parent.path}"
    if cfg.partition.method == "kfold":
        raise ValueError(f"{where}: partition.method kfold is not supported; fine-tune one run (patient)")
    problems = [
        f"prepare.{k} {getattr(cfg.prepare, k)!r} (RUN's weights take {getattr(parent.input, k)!r})"
        for k in INPUT_FIELDS
        if getattr(cfg.prepare, k) != getattr(parent.input, k)
    ]
    if cfg.model.name != parent.model_name:
        problems.append(f"model.name {cfg.model.name!r} (RUN's network is {parent.model_name!r})")
    for k in NETWORK_FIELDS:
        theirs = parent.model_config.get(k, getattr(ModelConfig, k))
        if getattr(cfg.model, k) != theirs:
            problems.append(f"model.{k} {getattr(cfg.model, k)!r} (RUN's is {theirs!r})")
    if cfg.model.init_head != "random":
        problems.append(f"model.init_head {cfg.model.init_head!r} (the head starts from RUN's)")
    if cfg.train.labels:
        problems.append(
            f"train.labels {', '.join(cfg.train.labels)} (RUN's labels are kept: {', '.join(parent.labels)})"
        )
    if problems:
        raise ValueError(f"{where} keeps what RUN's weights need; leave these out: {'; '.join(problems)}")


def compare_labels(parent: Parent, data_labels: tuple[str, ...], log: Log) -> tuple[list[str], list[str]]:
    """(RUN's labels the data lacks, the data's labels RUN lacks), logged; an error when none is shared."""
    names = [try_canonical_label(x) or x for x in data_labels]
    missing = [lab for lab in parent.labels if lab not in names]
    dropped = [x for x, n in zip(data_labels, names, strict=True) if n not in parent.labels]
    if len(missing) == len(parent.labels):
        raise ValueError(
            f"--init-from {parent.path}: none of RUN's labels ({', '.join(parent.labels)}) is among the "
            f"data's ({', '.join(data_labels) or 'none'})"
        )
    if missing:
        log(
            f"note: the data lacks {', '.join(missing)} of RUN's labels: unknown there, so not trained on, "
            "and their thresholds cannot be fitted on this data (validate the new run before use)"
        )
    if dropped:
        log(f"note: dropped the data's labels RUN does not predict: {', '.join(dropped)}")
    return missing, dropped


def check_task(parent: Parent, data: TrainData) -> None:
    """Refuse data (or a loss) that trains another task than RUN's head predicts."""
    if data.task != parent.task:
        raise ValueError(
            f"--init-from {parent.path}: RUN predicts {parent.task} outputs, this data and loss train "
            f"{data.task} ones (train.loss ce: single-label class folders; bce: multi-label)"
        )


def lineage_of(parent: Parent, missing: list[str], dropped: list[str]) -> Lineage:
    """What the new run's init.json records."""
    return Lineage(
        init_from=str(parent.path),
        parent_weights_sha256=parent.digest,
        model_name=parent.model_name,
        model_config=parent.model_config,
        labels=parent.labels,
        task=parent.task,
        input=parent.input.as_dict(),
        missing_labels=tuple(missing),
        dropped_labels=tuple(dropped),
    )
