"""A run folder with random weights: what benchmarks and tests need when speed, not skill, is measured.

It holds everything prediction reads (best.pt with the checkpoint meta training stores, model.json
with thresholds and an operating point), so ``RunModel.load``, ``cxr predict``, ``cxr export`` and
``cxr serve`` treat it as any trained run. Its scores mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

UNTRAINED_LABELS = ("No Finding", "Effusion", "Pneumonia")


def make_untrained_run(
    root: Path,
    intensity: str = "none",
    model_name: str = "cnn3_32_64_128",
    size: int = 32,
    labels: Sequence[str] = UNTRAINED_LABELS,
    seed: int = 0,
) -> Path:
    """Write a run folder at ``root`` (new): ``model_name`` at ``size`` px, seeded random weights."""
    import torch

    from cxrkit.data.transforms import InputSpec
    from cxrkit.run import files
    from cxrkit.run.checkpoint import cpu_state, save_checkpoint
    from cxrkit.run.model import build_network, network_spec
    from cxrkit.run.package import ModelPackage, OperatingPoint, write_package

    labels = tuple(labels)
    if labels[0] != "No Finding" or len(labels) < 2:
        raise ValueError("labels: 'No Finding' first, then at least one finding")
    torch.manual_seed(seed)
    config = {"name": model_name, "grey": "fold", "intensity": intensity}
    model = build_network(model_name, config, len(labels))
    spec = InputSpec(size, "pad", intensity=intensity)
    meta = {
        "model_name": model_name,
        "model_config": network_spec(config, model),
        "labels": list(labels),
        "task": "multilabel",
        "input": spec.as_dict(),
    }
    root = Path(root)
    root.mkdir(parents=True)
    save_checkpoint(root / files.BEST, model_state=cpu_state(model), epoch=0, **meta)
    n = len(labels)
    temperatures = (1.0, 1.2, 0.9) if n == 3 else (1.0,) * n
    thresholds = {"0.5": (0.5,) * n, "max_f1": (0.3, 0.4, 0.2) if n == 3 else (0.3,) * n}
    pkg = ModelPackage(
        model_name,
        network_spec(config, model),
        labels,
        "multilabel",
        spec,
        temperatures,
        thresholds,
        OperatingPoint("no_finding", 0.95, 0.2, 0.96, 0.4, 50),
    )
    write_package(root, pkg)
    return root
