"""``cxr compare``: several runs side by side (runs not yet evaluated on the split are evaluated first)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.report.compare import comparison_page, comparison_row
from cxrkit.report.html import write_page
from cxrkit.run import files


def compare_runs(
    runs: Sequence[str | Path],
    split: str = "test",
    out: str | Path | None = None,
    evaluate: Callable[[Path], Path] | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Read each run's eval-<split>/metrics.json (evaluating first via ``evaluate`` when missing)."""
    rows = []
    for r in map(Path, runs):
        path = files.eval_dir(r, split) / files.METRICS
        if not path.is_file():
            if evaluate is None:
                raise FileNotFoundError(f"{path} is missing: run `cxr evaluate {r} --split {split}` first")
            evaluate(r)
        rows.append(comparison_row(json.loads(path.read_text())))
    frame = pd.DataFrame(rows).astype(object).where(lambda d: d.notna(), np.nan)
    out = Path(out) if out else Path(runs[0]).parent / f"comparison-{split}"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "comparison.csv", index=False)
    write_page(out / "comparison.html", comparison_page(frame, split))
    return frame, out
