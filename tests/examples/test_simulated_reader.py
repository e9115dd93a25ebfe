"""The README's feedback walkthrough, its first half over real HTTP: the simulated reader uploads phantoms
to a service started with --feedback/--keep-images and posts verdicts; ``cxr feedback --export`` then
holds one row per read study whose labels are the phantoms' truth, and the held-out table reads back.
(The second half, fine-tuning and validation, is tests/workflows/test_feedback_loop.py.)"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from live import live_server

from cxrkit.cli import main
from cxrkit.config import ServeConfig
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.labels import LABELS
from cxrkit.run.model import RunModel
from cxrkit.serve.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from simulated_reader import simulate


def test_simulated_reader_feeds_labels_that_match_the_truth(phantom_run, tmp_path, capsys):
    db, kept, site = tmp_path / "site.sqlite", tmp_path / "kept", tmp_path / "site"
    cfg = ServeConfig(feedback=str(db), keep_images=str(kept))
    with live_server(create_app(RunModel.load(phantom_run, "cpu"), cfg)) as url:
        done = simulate(url, site, n=15, seed=7)
    assert done == {"read": 10, "holdout": 5}
    labels_csv = tmp_path / "labels.csv"
    assert main(["feedback", str(db), "--export", str(labels_csv)]) == 0, capsys.readouterr().err
    table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    truth = PhantomDataset(15, 64, seed=7).targets()
    hashes = [
        hashlib.sha256((site / "images" / f"read-{k:04d}.png").read_bytes()).hexdigest() for k in range(10)
    ]
    assert sorted(table["patient_id"]) == sorted(hashes)  # every read study, once
    for _, row in table.iterrows():
        want = truth[hashes.index(row["patient_id"])]
        got = np.array([float(row[lab]) for lab in LABELS])
        assert np.array_equal(got, want), row["patient_id"]  # an always-right reader: the export is the truth
        shown = labels_csv.parent / row["path"]  # relative to the CSV, as cxr train reads it
        read = site / "images" / f"read-{hashes.index(row['patient_id']):04d}.png"
        assert shown.read_bytes() == read.read_bytes()
    holdout = pd.read_csv(site / "holdout.csv")
    assert len(holdout) == 5 and all((site / p).is_file() for p in holdout["path"])
