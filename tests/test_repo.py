"""The repository's contract: ruff clean, example configs valid, no side effects at import."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrkit.config import DataConfig, RunConfig, build_run_config, load_yaml, merge

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed (pip install -e '.[test]')",
)
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "src", "tests"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    """Run configs are validated whole by the builder a run uses; data sections and grids by theirs."""
    doc = load_yaml(path)
    if path.parent.name == "data":
        assert isinstance(merge(DataConfig(), doc["data"]), DataConfig)
    elif "runs" in doc:
        from cxrkit.workflows.experiments import load_grid

        base, runs = load_grid(path)
        for run in runs:
            build_run_config(base, {k: v for k, v in run.items() if k != "name"})
    else:
        assert isinstance(build_run_config(doc), RunConfig)


def test_the_demo_recipe_ships_inside_the_package():
    """`cxr demo` reads the recipe shipped in the package: it must stay a copy of configs/demo.yaml."""
    from importlib import resources

    shipped = resources.files("cxrkit").joinpath("recipes/demo.yaml").read_text()
    assert shipped == (REPO / "configs" / "demo.yaml").read_text()


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import warnings, sys, numpy, pandas, PIL.Image, yaml, tqdm; before = list(warnings.filters); "
        "import cxrkit, cxrkit.data, cxrkit.cli, cxrkit.cli.data, cxrkit.run.files, cxrkit.workflows, "
        "cxrkit.data.cache, cxrkit.report.eda; assert warnings.filters == before; "
        "assert sorted(cxrkit.__all__) == ['Run', 'RunConfig', '__version__', 'build_dataset', "
        "'create_model', 'load_run', 'train']; "
        "assert 'torch' not in sys.modules, 'torch imported at import time'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []  # no folders created


def test_a_hanging_test_fails_with_its_name(tmp_path):
    """pytest-timeout is configured: a stuck test is reported by name instead of eating the CI budget."""
    assert re.search(r"^timeout = \d+$", (REPO / "pyproject.toml").read_text(), re.M)
    (tmp_path / "test_stuck.py").write_text("import time\n\ndef test_stuck():\n    time.sleep(30)\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=1", "test_stuck.py"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=25)
    assert out.returncode == 1 and "Timeout" in out.stdout and "test_stuck" in out.stdout, out.stdout[-2000:]


KERMANY_NAME = re.compile(r"(?:person\d+_(?:bacteria|virus)_\d+|(?:NORMAL2-)?IM-\d{4}-\d{4})\.jpe?g")


def test_no_kermany_file_outside_the_training_folder_is_named():
    """The official Kermany test split stays unseen: a Kermany-style file name in the repository is a
    file of ../shared's training folder, or an invented one (patient numbers from 9000 on)."""
    from conftest import shared_path

    train = shared_path("data", "kermany-pneumonia", "train")  # skips, saying why, where ../shared is absent
    known = {p.name for p in train.rglob("*.jpeg")}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    named = {
        (path, m.group(0))
        for path in tracked
        if path.endswith((".py", ".md", ".yaml", ".toml", ".txt", ".html", ".js"))
        for m in KERMANY_NAME.finditer((REPO / path).read_text(errors="replace"))
    }
    invented = re.compile(r"person9\d{3}_|IM-9\d{3}-")
    unknown = sorted(f"{p}: {n}" for p, n in named if n not in known and not invented.match(n))
    assert not unknown, unknown
