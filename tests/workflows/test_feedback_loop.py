"""The whole loop on phantoms: the run's answers and readers' verdicts in a store, ``cxr feedback --export``,
``cxr train --init-from RUN`` on the export, and ``cxr validate`` of the fine-tuned run on held-out studies.

Slow (``phantom_run``: the session's trained run); the store is filled directly, as the service would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxrkit import __version__
from cxrkit.cli import main
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.labels import LABELS, NO_FINDING
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.lineage import read_lineage
from cxrkit.run.model import RunModel, build_network
from cxrkit.run.onnx import weights_digest
from cxrkit.workflows.feedback import FeedbackStore

SHOWN = ("Effusion", "Cardiomegaly", "Nodule")  # the findings the readers mark one by one


def _phantoms(folder: Path, n: int, seed: int) -> tuple[list[Path], np.ndarray]:
    """``n`` new phantoms (the run's generator, another seed) as PNGs, and their true labels (N, 15)."""
    ds = PhantomDataset(n, 64, seed=seed)
    folder.mkdir(parents=True)
    paths = []
    for k in range(n):
        paths.append(folder / f"upload-{k}.png")
        Image.fromarray(ds.load_image(k)).save(paths[-1])
    return paths, ds.targets()


def _fill_store(run: Path, db: Path, kept: Path, uploads: list[Path], truth: np.ndarray) -> FeedbackStore:
    """Score the uploads as the service does, keep the images by hash, and add readers' verdicts."""
    model = RunModel.load(run, "cpu")
    table = model.predict([str(p) for p in uploads])
    _rule, thresholds = model.package.display_thresholds("max_f1")
    store = FeedbackStore(db)
    kept.mkdir()
    rng = np.random.default_rng(0)
    for k, path in enumerate(uploads):
        data = path.read_bytes()
        study = hashlib.sha256(data).hexdigest()
        (kept / f"{study}.png").write_bytes(data)
        row = table.iloc[k]
        answer = {
            "probabilities": {lab: float(row[lab]) for lab in model.labels},
            "thresholds": {lab: float(t) for lab, t in zip(model.labels, thresholds, strict=True)},
            "triage": {"flag": row["triage_flag"], "score": float(row["triage_score"]), "threshold": 0.5},
        }
        digest = {"name": run.name, "digest": weights_digest(run), "version": __version__}
        store.record_prediction(study, digest, answer, str(kept / f"{study}.png"))
        abnormal = truth[k, LABELS.index(NO_FINDING)] == 0
        said = "abnormal" if abnormal else "normal"
        marks = {lab: "present" if truth[k, LABELS.index(lab)] == 1 else "absent" for lab in SHOWN}
        for reader in ("dr-a", "dr-b") if k % 3 == 0 else ("dr-a",):
            if row["triage_flag"] in ("normal", "abnormal"):
                triage = "agree" if row["triage_flag"] == said else "disagree"
            else:
                triage = None
            shown = marks if abnormal or rng.random() < 0.5 else {}
            store.add_feedback(
                study, triage, shown, comment=f"patient DOE^JANE, reader {reader}", reader=reader
            )
    return store


def test_feedback_to_fine_tuning_to_validation(phantom_run, tmp_path, capsys):
    uploads, truth = _phantoms(tmp_path / "uploads", 80, seed=11)
    db, kept = tmp_path / "feedback.db", tmp_path / "kept"
    _fill_store(phantom_run, db, kept, uploads, truth)

    labels_csv, page = tmp_path / "labels.csv", tmp_path / "feedback.html"
    assert (
        main(["feedback", str(db), "--export", str(labels_csv), "--report", str(page), "--bootstrap", "50"])
        == 0
    )
    assert f"wrote {labels_csv}: 80 studies" in capsys.readouterr().out
    exported = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    assert "DOE" not in labels_csv.read_text() + page.read_text()
    # every label the readers gave matches the phantom's truth: the export rules lose nothing true
    for k, study in enumerate(exported["patient_id"]):
        assert (kept / f"{study}.png").is_file()
        for lab in (*SHOWN, NO_FINDING):
            cell = exported.iloc[k][lab]
            truth_k = truth[[hashlib.sha256(p.read_bytes()).hexdigest() for p in uploads].index(study)]
            assert cell == "" or float(cell) == truth_k[LABELS.index(lab)], (study, lab)
    # and the rules do give labels: every verdict on a normal/abnormal flag fixes No Finding
    assert (exported[NO_FINDING] != "").mean() > 0.8 and (exported[list(SHOWN)] != "").any(axis=None)

    out = tmp_path / "runs"
    argv = [
        "train",
        "--init-from",
        str(phantom_run),
        "data.source=table",
        f"data.path={labels_csv}",
        "train.epochs=1",
        "train.lr=1e-4",
        "train.batch_size=16",
        "train.progress=false",
        "partition.train=0.6",
        "partition.val=0.4",
        "partition.test=0",
        f"cache_dir={tmp_path / 'cache'}",
        "--out",
        str(out),
        "--name",
        "fine-tuned",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    child = out / "fine-tuned"
    parent_ckpt, child_ckpt = load_checkpoint(phantom_run / "best.pt"), load_checkpoint(child / "best.pt")
    assert child_ckpt["labels"] == parent_ckpt["labels"] and child_ckpt["input"] == parent_ckpt["input"]
    lineage = read_lineage(child)
    assert lineage.init_from == str(
        phantom_run.resolve()
    ) and lineage.parent_weights_sha256 == weights_digest(phantom_run)

    # started from the parent's weights: one short epoch at lr 1e-4 leaves them nearly where they were,
    # while a fresh network of the same spec points elsewhere entirely
    def flat(state: dict) -> torch.Tensor:
        """Every conv and linear weight (BatchNorm's are all ones at the start) in one vector."""
        return torch.cat(
            [v.flatten().float() for k, v in state.items() if k.endswith("weight") and v.ndim > 1]
        )

    torch.manual_seed(123)  # not the run's seed: its own starting point would be "fresh" too
    fresh = build_network(parent_ckpt["model_name"], parent_ckpt["model_config"], len(parent_ckpt["labels"]))
    cos = torch.nn.functional.cosine_similarity
    assert cos(flat(child_ckpt["model_state"]), flat(parent_ckpt["model_state"]), dim=0) > 0.99
    assert cos(flat(fresh.state_dict()), flat(parent_ckpt["model_state"]), dim=0) < 0.5

    # held-out studies the fine-tuning never saw: cxr validate works on the new run
    held, held_truth = _phantoms(tmp_path / "held-out", 60, seed=12)
    frame = pd.DataFrame(held_truth.astype(int), columns=list(LABELS)).astype(str)
    frame.insert(0, "path", [f"held-out/{p.name}" for p in held])
    frame.to_csv(tmp_path / "held-out.csv", index=False)
    report = tmp_path / "validated"
    args = ["validate", str(child), str(tmp_path / "held-out.csv"), "--out", str(report), "--bootstrap", "50"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0, capsys.readouterr().err
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation["images"] == 60 and evaluation["macro_auc"]["value"] > 0.6
