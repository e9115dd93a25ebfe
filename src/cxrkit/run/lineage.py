"""``init.json``: where a fine-tuned run (``cxr train --init-from RUN``) started from.

A run folder holding it was not trained from scratch. The file names the parent run folder and the
sha256 of the parent's best.pt (so the new run is traceable to the exact weights), and stores what
the new run inherited and keeps: the label list in the parent's order (labels its data lacks are
unknown there, never dropped), the network spec and the input spec. Resuming the run and re-scoring
its splits read the labels from here, so they line up with the network's outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from cxrkit.outputs import read_json, write_json
from cxrkit.run import files


@dataclass(frozen=True)
class Lineage:
    """A fine-tuned run's parent and inheritance (see the module docstring)."""

    init_from: str  # the parent run folder, absolute
    parent_weights_sha256: str  # sha256 of the parent's best.pt (run.onnx.weights_digest)
    model_name: str
    model_config: dict  # the parent's network spec (run.model.network_spec): rebuilds the exact network
    labels: tuple[str, ...]  # the parent's labels, in its order: the new run's outputs
    task: str
    input: dict  # the parent's input spec (data.transforms.InputSpec.as_dict)
    missing_labels: tuple[str, ...] = ()  # the parent's labels the new data lacks (unknown there)
    dropped_labels: tuple[str, ...] = ()  # the new data's labels the parent does not predict (not trained)

    def as_dict(self) -> dict:
        """Plain JSON (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def write_lineage(run_dir: str | Path, lineage: Lineage) -> Path:
    """Write ``run_dir``/init.json."""
    return write_json(Path(run_dir) / files.INIT, lineage.as_dict(), null_reason=None)


def read_lineage(run_dir: str | Path) -> Lineage | None:
    """The run's lineage, None for a run trained from scratch; a ValueError naming a broken file."""
    path = Path(run_dir) / files.INIT
    if not path.is_file():
        return None
    doc = read_json(path)
    try:
        return Lineage(
            init_from=str(doc["init_from"]),
            parent_weights_sha256=str(doc["parent_weights_sha256"]),
            model_name=str(doc["model_name"]),
            model_config=dict(doc["model_config"]),
            labels=tuple(str(x) for x in doc["labels"]),
            task=str(doc["task"]),
            input=dict(doc["input"]),
            missing_labels=tuple(doc.get("missing_labels", ())),
            dropped_labels=tuple(doc.get("dropped_labels", ())),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a cxrkit init.json ({type(err).__name__}: {err})") from None
