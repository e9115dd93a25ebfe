"""``cxr localize``: score a run's heatmaps against hand-drawn boxes (ChestX-ray8 protocol).

Ground-truth boxes come from the run's data (NIH: BBox_List_2017, shipped with torchxrayvision;
phantoms: exact boxes) or from a CSV given by the user; both are compared with predicted boxes in
original-image pixels. For each (image, boxed finding) the heatmap is taken *for that finding*.
The heatmap threshold (fraction of its maximum) is chosen on the run's validation boxes when it
has any (phantoms); NIH boxes all lie in the official test list, so there it defaults to 0.5 unless
given. A centred box of the ground truth's mean relative size is scored the same way as a baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.transforms import compute_geometry, to_model_input
from cxrkit.explain.boxes import IOBB_THRESHOLDS, Box, best_overlaps, heatmap_boxes, localization_table
from cxrkit.explain.gradcam import compute_heatmaps, label_index
from cxrkit.outputs import make_out_dir, write_csv, write_json
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData, load_run_data
from cxrkit.run.model import RunModel

FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def ground_truth(data: TrainData, boxes_csv: str | Path | None = None) -> pd.DataFrame:
    """Boxes in original-image pixels of the run's images: image_id, row, label, x, y, w, h, split."""
    meta = data.cache.meta.reset_index(drop=True)
    if boxes_csv is not None:
        from cxrkit.data.nih import read_nih_boxes

        raw = read_nih_boxes(Path(boxes_csv))  # reference frame: 1024 x 1024
        dims = meta.set_index("image_id")[["src_w", "src_h"]]
        raw = raw[raw["image_id"].isin(dims.index)].copy()
        kx = dims.loc[raw["image_id"], "src_w"].to_numpy() / raw["ref_w"].to_numpy()
        ky = dims.loc[raw["image_id"], "src_h"].to_numpy() / raw["ref_h"].to_numpy()
        raw["x"], raw["w"], raw["y"], raw["h"] = raw["x"] * kx, raw["w"] * kx, raw["y"] * ky, raw["h"] * ky
        boxes = raw
    else:  # the cache holds boxes in cached pixels: map them back through each image's geometry
        rows = []
        dims = meta.set_index("image_id")[["src_w", "src_h"]]
        for b in data.cache.boxes.itertuples(index=False):
            sw, sh = dims.loc[b.image_id]
            geo = compute_geometry(int(sw), int(sh), data.cache.images.shape[1], data.cache.manifest["mode"])
            s = Box(b.x, b.y, b.w, b.h).to_source(geo)
            rows.append((b.image_id, b.label, s.x, s.y, s.w, s.h))
        boxes = pd.DataFrame(rows, columns=["image_id", "label", "x", "y", "w", "h"])
    row_of = pd.Series(np.arange(len(meta)), index=meta["image_id"].astype(str))
    boxes = boxes[["image_id", "label", "x", "y", "w", "h"]].copy()
    boxes["row"] = row_of.loc[boxes["image_id"].astype(str)].to_numpy()
    part = np.full(len(meta), "", dtype=object)
    for name, idx in data.partition.items():
        part[idx] = name
    boxes["split"] = part[boxes["row"].to_numpy()]
    return boxes.reset_index(drop=True)


def heatmaps_for(
    run: RunModel, data: TrainData, pairs: pd.DataFrame, method: str, batch: int = 32
) -> dict[tuple[int, str], np.ndarray]:
    """Heatmaps (S, S) for each distinct (cache row, label) in ``pairs``."""
    keys = list(dict.fromkeys(zip(pairs["row"].astype(int), pairs["label"], strict=True)))
    out = {}
    for s in range(0, len(keys), batch):
        chunk = keys[s : s + batch]
        rows = np.array([r for r, _ in chunk])
        order = np.argsort(rows, kind="stable")
        imgs = np.asarray(data.cache.images[np.sort(rows)])[np.argsort(order)]
        x = to_model_input(imgs, run.device)
        cols = [label_index(run.labels, lab) for _, lab in chunk]
        heat = compute_heatmaps(run.model, x, cols, method).cpu().numpy()
        out.update({k: heat[i] for i, k in enumerate(chunk)})
    return out


def score_boxes(
    gt: pd.DataFrame, heat: dict, data: TrainData, frac: float, max_boxes: int = 1
) -> pd.DataFrame:
    """One row per ground-truth box: its best IoBB and IoU with the boxes cut from its label's heatmap."""
    meta = data.cache.meta
    size, mode = data.cache.images.shape[1], data.cache.manifest["mode"]
    rows = []
    for g in gt.itertuples(index=False):
        geo = compute_geometry(int(meta["src_w"].iloc[g.row]), int(meta["src_h"].iloc[g.row]), size, mode)
        preds = [b.to_source(geo) for b in heatmap_boxes(heat[(int(g.row), g.label)], frac, max_boxes)]
        bi, bu = best_overlaps(preds, Box(g.x, g.y, g.w, g.h))
        p = preds[0] if preds else Box(0, 0, 0, 0)
        rows.append(
            {
                "image_id": g.image_id,
                "label": g.label,
                "split": g.split,
                "iobb": bi,
                "iou": bu,
                "pred_x": p.x,
                "pred_y": p.y,
                "pred_w": p.w,
                "pred_h": p.h,
            }
        )
    return pd.DataFrame(rows)


def centred_baseline(gt: pd.DataFrame, data: TrainData, reference: pd.DataFrame) -> pd.DataFrame:
    """IoBB/IoU of a centred box whose relative size is the mean of ``reference``'s boxes, per label."""
    meta = data.cache.meta
    w_img, h_img = meta["src_w"].to_numpy(float), meta["src_h"].to_numpy(float)
    ref = reference.assign(
        rw=reference["w"] / w_img[reference["row"]], rh=reference["h"] / h_img[reference["row"]]
    )
    size = ref.groupby("label")[["rw", "rh"]].mean()
    overall = ref[["rw", "rh"]].mean()
    rows = []
    for g in gt.itertuples(index=False):
        rw, rh = size.loc[g.label] if g.label in size.index else overall
        W, H = w_img[g.row], h_img[g.row]
        c = Box(W * (1 - rw) / 2, H * (1 - rh) / 2, W * rw, H * rh)
        bi, bu = best_overlaps([c], Box(g.x, g.y, g.w, g.h))
        rows.append({"image_id": g.image_id, "label": g.label, "split": g.split, "iobb": bi, "iou": bu})
    return pd.DataFrame(rows)


def choose_fraction(gt_val: pd.DataFrame, heat: dict, data: TrainData, max_boxes: int = 1) -> float:
    """The heatmap threshold fraction with the best validation accuracy at T(IoBB)=0.5 (ties: mean IoU)."""
    best = (-1.0, -1.0, 0.5)
    for f in FRACTIONS:
        s = score_boxes(gt_val, heat, data, f, max_boxes)
        key = (float((s["iobb"] > 0.5).mean()), float(s["iou"].mean()), f)
        best = max(best, key)
    return best[2]


def write_box_overlays(
    scores: pd.DataFrame,
    heat: dict,
    data: TrainData,
    out: Path,
    frac: float,
    max_boxes: int = 1,
    limit: int = 24,
) -> Path | None:
    """Overlays of the first ``limit`` scored boxes (true box green, heatmap box red) and their grid."""
    from cxrkit.explain.overlay import render_overlay, save_grid

    meta = data.cache.meta
    row_of = pd.Series(np.arange(len(meta)), index=meta["image_id"].astype(str))
    gt = data.cache.boxes  # in cached pixels, like the heatmaps
    tiles = []
    for s in scores.head(limit).itertuples(index=False):
        r = int(row_of[str(s.image_id)])
        h = heat[(r, s.label)]
        true = [
            Box(b.x, b.y, b.w, b.h)
            for b in gt[(gt["image_id"] == s.image_id) & (gt["label"] == s.label)].itertuples()
        ]
        caption = f"{s.label}: IoBB {s.iobb:.2f}, IoU {s.iou:.2f}"
        tiles.append(
            render_overlay(
                np.asarray(data.cache.images[r]), h, heatmap_boxes(h, frac, max_boxes), true, caption
            )
        )
    return save_grid(tiles, out / files.LOCALIZATION_OVERLAYS) if tiles else None


def localize_run(
    run_dir: str | Path,
    boxes_csv: str | Path | None = None,
    split: str = "auto",
    frac: float | None = None,
    method: str = "gradcam",
    max_boxes: int = 1,
    device: str = "auto",
    log: Log = print,
) -> tuple[pd.DataFrame, Path]:
    """Score the run's heatmaps on the boxed images; write RUN/localization/ and return the table."""
    run = RunModel.load(run_dir, device)
    data = load_run_data(run.path, log)
    gt = ground_truth(data, boxes_csv)
    gt = gt[gt["label"].isin(run.labels)].reset_index(drop=True)
    if gt.empty:
        raise ValueError(f"{run.path}: none of the run's images has a box for one of its labels")
    val = gt[gt["split"] == "val"]
    if split == "auto":
        split = "test" if (gt["split"] == "test").any() else "all"
    scored = gt if split == "all" else gt[gt["split"] == split]
    if scored.empty:
        raise ValueError(
            f"no boxed images in the {split!r} split ({len(gt)} boxes elsewhere); use --split all"
        )
    heat = heatmaps_for(run, data, pd.concat([scored, val]) if frac is None and len(val) else scored, method)
    how = "given"
    if frac is None:
        frac, how = (
            (choose_fraction(val, heat, data, max_boxes), "chosen on validation boxes")
            if len(val)
            else (0.5, "default (no validation boxes)")
        )
    scores = score_boxes(scored, heat, data, frac, max_boxes)
    train_boxes = gt[gt["split"] == "train"]
    baseline = centred_baseline(scored, data, train_boxes if len(train_boxes) else gt)
    table = localization_table(scores)
    base_table = localization_table(baseline)
    out = run.path / files.LOCALIZATION_DIR
    out = make_out_dir(out)
    write_csv(out / files.LOCALIZATION_SCORES, scores, index=False)
    write_csv(out / files.LOCALIZATION_TABLE, table)
    result = {
        "method": method,
        "fraction": frac,
        "fraction_source": how,
        "split": split,
        "boxes": len(scores),
        "images": int(scores["image_id"].nunique()),
        "splits_of_boxed_images": scored["split"].value_counts().to_dict(),
        "table": table.to_dict(),
        "baseline_centred_box": base_table["all"].to_dict(),
        "accuracy_iobb": {f"{t:g}": float((scores["iobb"] > t).mean()) for t in IOBB_THRESHOLDS},
    }
    result = json.loads(json.dumps(result, default=float))  # the form it is read back in
    write_json(run.path / files.LOCALIZATION, result)
    write_box_overlays(scores, heat, data, out, frac, max_boxes)
    from cxrkit.report.html import write_page
    from cxrkit.report.localization import localization_page
    from cxrkit.workflows.evaluate import write_evaluation_report

    write_page(out / files.REPORT, localization_page(run.path.name, result))
    for folder in files.eval_dirs(run.path):  # compose each evaluation report anew
        write_evaluation_report(run.path, folder, data)
    log(
        f"localization ({method}, heatmap >= {frac:g} x max, {how}) on {len(scores)} boxes "
        f"in {result['images']} images ({split} split):"
    )
    return table.assign(**{"centred box (all)": base_table["all"]}), out
