"""``cxr package RUN``: (re)write a run's model.json from its validation split.

Training does this at its end; this command does it for runs trained before runs carried their
own calibration, thresholds and operating point, or after changing the triage target.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cxrkit.models.device import resolve_device
from cxrkit.outputs import read_json, write_text
from cxrkit.run import files
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.data import Log, is_ensemble, load_run_config, load_run_data
from cxrkit.run.model import build_network
from cxrkit.run.package import ModelPackage, write_package


def package_run(
    run_dir: str | Path, overrides: dict | None = None, device: str = "auto", log: Log = print
) -> ModelPackage:
    """Fit calibration, thresholds and the operating point on the run's validation split; write model.json."""
    from cxrkit.training.record import write_model_package

    run_dir = files.check_run_folder(Path(run_dir), (files.CONFIG,))
    if is_ensemble(load_run_config(run_dir).partition):
        raise ValueError(
            f"{run_dir} is a K-fold ensemble: `cxr train --resume {run_dir} triage.target_sensitivity=...` "
            "refits its model.json from the folds' out-of-fold scores"
        )
    files.check_run_folder(run_dir, (files.BEST,))
    bad = sorted(k for k in overrides or {} if not k.startswith("triage."))
    if bad:  # the weights fix the model, labels and input: only the triage point may change
        raise ValueError(f"cxr package takes triage.* settings only (got {', '.join(bad)})")
    cfg = load_run_config(run_dir, overrides)
    data = load_run_data(run_dir, log)
    ckpt = load_checkpoint(run_dir / files.BEST)
    if list(ckpt["labels"]) != list(data.labels):
        raise ValueError(
            f"{run_dir}: the weights' labels {ckpt['labels']} differ from the data's {data.labels}"
        )
    model = build_network(ckpt["model_name"], ckpt["model_config"], len(ckpt["labels"]))
    model.load_state_dict(ckpt["model_state"])
    dev = resolve_device(device)
    model.to(dev).eval()
    site, ood = _site_provenance(run_dir), _section(run_dir, "ood")
    pkg = write_model_package(run_dir, model, data, cfg, dev, log, keep_ood=ood)
    if site:  # a site-calibrated run refitted on its calibration part: it still says where it came from
        pkg = dataclasses.replace(pkg, validation={**pkg.validation, "site": site})
        write_package(run_dir, pkg)
    if overrides:  # e.g. triage.target_sensitivity: the saved config says what the package was made with
        write_text(run_dir / files.CONFIG, cfg.to_yaml())
    return pkg


def _site_provenance(run_dir: Path) -> dict | None:
    """``validation.site`` of the run's current model.json (a site-calibrated run), else None."""
    return (_section(run_dir, "validation") or {}).get("site")


def _section(run_dir: Path, key: str) -> dict | None:
    """Section ``key`` of the run's current model.json, or None (no file, unreadable, absent)."""
    try:
        value = read_json(run_dir / files.PACKAGE).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, dict) else None
