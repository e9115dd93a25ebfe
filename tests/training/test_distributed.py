"""Multi-process training through torchrun: 2 CPU processes on gloo write one run folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cxrkit.run.checkpoint import load_checkpoint


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo is tested on Linux/macOS")
@pytest.mark.slow
def test_two_process_ddp_on_gloo_writes_one_run_folder(tmp_path):
    local = Path(sys.executable).parent / "torchrun"  # the venv's own, not another install's
    torchrun = str(local) if local.exists() else shutil.which("torchrun")
    assert torchrun, "torchrun not found beside python or on PATH"
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "cxrkit.cli",
        "train",
        "data.source=phantom",
        "data.n=96",
        "data.size=32",
        "data.images_per_patient=2",
        "prepare.size=32",
        "model.name=cnn2_64_128_bn",
        "train.epochs=2",
        "train.batch_size=16",
        "train.progress=false",
        f"cache_dir={tmp_path / 'cache'}",
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]
    assert "2 process(es)" in out.stdout and out.stdout.count("epoch 2/2") == 1  # rank 0 logs alone
    assert len(pd.read_csv(runs[0] / "history.csv")) == 2
    ck = load_checkpoint(runs[0] / "last.pt")
    assert not any(k.startswith("module.") for k in ck["model_state"])  # plain state dict, loads without DDP
