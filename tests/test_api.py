"""The README's Python API example runs as written (in a fresh folder, in a fresh interpreter)."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no <!-- api-example --> python block"
    return m.group(1)


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path):
    code = readme_example()
    code += "\ntable.to_csv('table.csv', index=False)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test macro ROC-AUC over 14 findings" in out.stdout
    table = pd.read_csv(tmp_path / "table.csv", keep_default_na=False)
    assert (
        len(table) == 3
        and (table["error"] == "").all()
        and table["triage_flag"].isin(["abnormal", "normal"]).all()
    )
    assert (tmp_path / "runs" / "api-example" / "model.json").is_file()
    assert (tmp_path / "runs" / "api-example" / "eval-test" / "report.html").is_file()


def test_public_names_are_the_documented_ones():
    import cxrkit

    for name in ("train", "load_run", "Run", "create_model", "build_dataset", "RunConfig"):
        assert getattr(cxrkit, name) is not None
    assert issubclass(cxrkit.Run, cxrkit.api.RunModel)
    assert cxrkit.build_dataset({"source": "phantom", "n": 2, "size": 32}).meta.shape[0] == 2
