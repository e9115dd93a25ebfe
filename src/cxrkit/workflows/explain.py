"""``cxr explain``: heatmap overlays for new images, for named labels or each image's top findings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cxrkit.data.transforms import compute_geometry, to_model_input
from cxrkit.explain.boxes import Box, heatmap_boxes
from cxrkit.explain.gradcam import compute_heatmaps, label_index
from cxrkit.explain.overlay import heat_layer, heatmap_to_source, render_overlay, save_grid
from cxrkit.labels import NO_FINDING
from cxrkit.outputs import make_out_dir, printable, read_json, unique_stems, write_with
from cxrkit.run import files
from cxrkit.run.data import Log
from cxrkit.run.inputs import Input, PreparedInputs
from cxrkit.run.model import RunModel

DISPLAY_SIDE = 768  # overlays for people are drawn at most this large


def _known_boxes(names: Sequence[str]) -> dict[str, list[tuple[str, Box]]]:
    """NIH boxes (1024 frame) for files named like NIH images, from the shipped BBox_List_2017."""
    from cxrkit.data.nih import read_nih_boxes, shipped_data_file

    try:
        boxes = read_nih_boxes(shipped_data_file("BBox_List_2017.csv.gz"))
    except (FileNotFoundError, ValueError):
        return {}
    boxes = boxes[boxes["image_id"].isin(set(names))]
    out: dict[str, list[tuple[str, Box]]] = {}
    for b in boxes.itertuples(index=False):
        out.setdefault(b.image_id, []).append(
            (b.label, Box(b.x, b.y, b.w, b.h).scaled(1 / b.ref_w, 1 / b.ref_h))
        )
    return out


def overlay_of(run: RunModel, image: np.ndarray, prepared: np.ndarray, label: str, caption: str, lock=None):
    """The Grad-CAM overlay (a PIL image) of ``label`` on a decoded image (H, W), from its (S, S) model
    input; the image is first shrunk to display size (a 7,700 px heatmap costs gigabytes). ``lock``:
    held around the forward/backward pass when other threads share the network."""
    from contextlib import nullcontext

    from PIL import Image

    k = min(1.0, DISPLAY_SIDE / max(image.shape))
    if k < 1.0:  # box filter: memory-light
        size = (max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k)))
        image = np.asarray(Image.fromarray(image, mode="L").resize(size, Image.Resampling.BOX))
    j = label_index(run.labels, label)
    x = to_model_input(prepared[None] if prepared.ndim == 2 else prepared, run.device)
    with lock if lock is not None else nullcontext():
        heat = compute_heatmaps(run.model, x, [j], "gradcam")[0].detach().cpu().numpy()
    geo = compute_geometry(image.shape[1], image.shape[0], run.spec.size, run.spec.mode)
    return render_overlay(image, heatmap_to_source(heat, geo), caption=caption)


def heat_layer_of(run: RunModel, image: np.ndarray, prepared: np.ndarray, label: str, lock=None):
    """The Grad-CAM of ``label`` as an RGBA layer (PIL) in the geometry of the decoded image (H, W)
    (its aspect ratio; at most 1024 px), normalised to its own peak as Grad-CAM is: where the model
    looked, not how sure it is. ``lock`` as in ``overlay_of``."""
    from contextlib import nullcontext

    j = label_index(run.labels, label)
    x = to_model_input(prepared[None] if prepared.ndim == 2 else prepared, run.device)
    with lock if lock is not None else nullcontext():
        heat = compute_heatmaps(run.model, x, [j], "gradcam")[0].detach().cpu().numpy()
    k = min(1.0, 1024 / max(image.shape))
    w, h = max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k))
    # the image's place in the model's square does not change with its scale: map onto (h, w) directly
    return heat_layer(heatmap_to_source(heat, compute_geometry(w, h, run.spec.size, run.spec.mode)))


def explain_images(
    run: str | Path | RunModel,
    images: Input | Sequence[Input],
    labels: Sequence[str] = (),
    top: int = 3,
    method: str = "gradcam",
    frac: float | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    log: Log = print,
    skipped: list[tuple[str, str]] | None = None,
    accept_missing_modality: bool = False,
) -> list[Path]:
    """Write one overlay PNG per (image, label) and a grid.png; return the overlay paths.

    Inputs that cannot be scored are logged and, with ``skipped``, appended to it as (source, reason).

    Without ``labels`` each image's ``top`` most probable findings are explained ("No Finding" has
    no region and is skipped). The heatmap box threshold is the run's localization choice when
    ``cxr localize`` saved one, else 0.5.
    """
    run = run if isinstance(run, RunModel) else RunModel.load(run, device)
    [label_index(run.labels, name) for name in labels]  # unknown names fail before any decoding
    if not labels and top < 1:
        raise ValueError(f"top {top}: expected 1 or more findings to explain per image")
    pred = run.prepare(images, keep_originals=True, accept_missing_modality=accept_missing_modality)
    for path, reason in pred.failures:
        log(f"NOT explained {printable(path)}: {reason}")
    if skipped is not None:
        skipped.extend(pred.failures)
    folder = Path(out) if out else run.path / files.EXPLAIN_DIR
    return explain_prepared(run, pred, run.probs(pred.images), folder, labels, top, method, frac, log)


def explain_prepared(
    run: RunModel,
    pred: PreparedInputs,
    probs: np.ndarray,
    folder: Path,
    labels: Sequence[str] = (),
    top: int = 3,
    method: str = "gradcam",
    frac: float | None = None,
    log: Log = print,
    grid: bool = True,
    stems: Mapping[str, str] | None = None,
) -> list[Path]:
    """Overlays for inputs already decoded (with originals) and scored: nothing is decoded twice.

    ``grid=False`` writes no grid.png (and keeps no tiles: for long folders). ``stems``: output name
    of each input source, made unique over all the inputs of a command (when it goes chunk by chunk).
    """
    cols = [label_index(run.labels, name) for name in labels]
    if run.members:
        log(
            f"note: {run.path.name} is a K-fold ensemble; its scores average {len(run.members)} folds, its "
            f"heatmaps are {run.members[0].path.name}'s Grad-CAM"
        )
    if frac is None:
        saved = run.path / files.LOCALIZATION
        frac = float(read_json(saved)["fraction"]) if saved.is_file() else 0.5
    meta = pred.rows_frame()
    folder = make_out_dir(folder)
    sources = [str(p) for p in meta["path"]]
    names = [stems[p] for p in sources] if stems is not None else unique_stems(sources)
    findings = [j for j, name in enumerate(run.labels) if name != NO_FINDING]
    truth = _known_boxes(list(meta["image_id"]))
    spec = run.spec
    written, tiles = [], []
    for i, row in meta.iterrows():
        chosen = cols or sorted(findings, key=lambda j: -probs[i, j])[:top]
        x = to_model_input(np.repeat(pred.images[i : i + 1], len(chosen), 0), run.device)
        heats = compute_heatmaps(run.model, x, chosen, method).cpu().numpy()
        original = pred.originals[i]  # type: ignore[index]
        geo = compute_geometry(original.shape[1], original.shape[0], spec.size, spec.mode)
        for j, heat in zip(chosen, heats, strict=True):
            name = run.labels[j]
            boxes = [b.to_source(geo) for b in heatmap_boxes(heat, frac)]
            true = [
                b.scaled(geo.src_w, geo.src_h) for lab, b in truth.get(row["image_id"], []) if lab == name
            ]
            caption = f"{name} {probs[i, j]:.2f} ({method})"
            im = render_overlay(original, heatmap_to_source(heat, geo), boxes, true, caption)
            path = write_with(folder / f"{names[i]}__{name}.png", lambda fh, im=im: im.save(fh, format="PNG"))
            written.append(path)
            if grid:
                tiles.append(im)
            log(
                f"{row['image_id']}: {name} {probs[i, j]:.3f} -> {path}"
                + (" (true box drawn)" if true else "")
            )
    if tiles:
        log(f"grid of {len(tiles)} overlays: {save_grid(tiles, folder / 'grid.png')}")
    return written
