"""The service behind the HTTP API: decoding, checking and scoring uploads of one run.

Every upload is checked before it costs anything: content type (415), size (413), declared pixel
count (413), decodability (422) and assessability (422 ``not_assessable``, by the one rule in
``cxrkit.data.assess``), each an ``ApiError`` naming the file. Scoring runs in the bounded pool.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit import __version__
from cxrkit.config import ServeConfig
from cxrkit.data.assess import check_assessable
from cxrkit.data.decode import ImageReadError, ImageTooLargeError, NotAssessableError, decode_bytes, is_dicom
from cxrkit.data.display import Display, dicom_display
from cxrkit.data.header import header_fields, reading_header
from cxrkit.data.transforms import prepare_image
from cxrkit.evaluate.drift import PIXEL_STATS
from cxrkit.evaluate.ood import ood_decisions
from cxrkit.evaluate.triage import abnormality_score, flag_names, top_finding, top_findings
from cxrkit.explain.gradcam import label_index
from cxrkit.run.card import borderline_band, model_warnings
from cxrkit.run.inputs import OUT_OF_DISTRIBUTION, min_side
from cxrkit.run.model import RunModel
from cxrkit.run.monitor_log import monitor_id, record
from cxrkit.serve.batcher import Batcher
from cxrkit.serve.errors import ApiError
from cxrkit.serve.monitor import ServiceMonitor
from cxrkit.serve.telemetry import Telemetry
from cxrkit.workflows.explain import DISPLAY_SIDE, heat_layer_of, overlay_of

ACCEPTED_TYPES = {
    "image/png",
    "image/jpeg",
    "image/jpg",
    "application/dicom",
    "application/octet-stream",  # what browsers send for a file type they do not know (a .dcm)
}
THRESHOLD_RULE = "max_f1"  # the per-label thresholds shown beside probabilities (chosen on validation)
PREVIEW_SIDE = DISPLAY_SIDE
DISPLAY_MAX_SIDE = 4096  # the reading view's image: full resolution up to this side
log = logging.getLogger("cxrkit.serve")
HEATMAP_CAPTION = "regions that most influenced this score — not a segmentation"


def clean_name(filename: str | None) -> str:
    """An upload's file name for answers: control characters dropped, at most 200 characters."""
    name = "".join(c for c in (filename or "") if c.isprintable())[:200]
    return name or "upload"


def _png_b64(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Service:
    """The run, its engine and limits: decoding, scoring and explaining single uploads."""

    def __init__(self, run: RunModel, cfg: ServeConfig) -> None:
        self.run, self.cfg = run, cfg
        self.telemetry = Telemetry()
        # Grad-CAM hooks the PyTorch network: with several workers, no other forward pass may run
        # through it meanwhile (ONNX Runtime sessions are safe to share)
        self.torch_lock = threading.Lock()
        self.pool = Batcher(self._score, cfg.workers, cfg.queue, cfg.max_batch)
        self.monitor = ServiceMonitor(run, cfg.monitor, cfg.monitor_window) if cfg.monitor else None
        self.threshold_rule, self.thresholds = run.package.display_thresholds(THRESHOLD_RULE)
        self.band = borderline_band(run.package)
        self.identity = {"name": run.path.name, "digest": monitor_id(run.path), "version": __version__}
        self.feedback = None
        if cfg.feedback:  # nothing is kept unless the deployment asks for it
            from cxrkit.workflows.feedback import FeedbackStore

            self.feedback = FeedbackStore(cfg.feedback)

    def _score(self, images: np.ndarray) -> np.ndarray:
        """(K, L + 1): calibrated probabilities, then the OOD score (NaN: the run has no reference)."""
        if self.run.engine != "torch":
            logits, feats = self.run.outputs(images)
        else:
            with self.torch_lock:
                logits, feats = self.run.outputs(images)
        ood = self.run.assess_ood(feats, logits, images=images if self.monitor is not None else None)
        summary = ood.summary if ood.summary is not None else np.zeros((len(logits), 0))
        pixels = ood.pixels if ood.pixels is not None else np.full((len(logits), len(PIXEL_STATS)), np.nan)
        return np.column_stack([self.run.package.probs(logits), ood.scores, summary, pixels])

    def decode(self, data: bytes, filename: str, content_type: str | None) -> np.ndarray:
        """Upload bytes -> (H, W) uint8 grey, or an ApiError naming the file and the problem."""
        ctype = (content_type or "").split(";")[0].strip().lower()
        if not ctype:  # a part without a Content-Type header: the client did not say what it sends
            raise ApiError(
                415,
                "unsupported_type",
                f"{filename}: the upload part has no Content-Type; expected image/png, image/jpeg, "
                "application/dicom or application/octet-stream",
            )
        if ctype not in ACCEPTED_TYPES:
            raise ApiError(
                415,
                "unsupported_type",
                f"{filename}: content type {ctype!r}; expected image/png, image/jpeg or application/dicom",
            )
        if not data:
            raise ApiError(400, "empty_file", f"{filename}: empty file (0 bytes)")
        if len(data) > self.cfg.max_upload_mb * 1e6:
            raise ApiError(
                413,
                "too_large",
                f"{filename}: {len(data) / 1e6:.1f} MB, over the {self.cfg.max_upload_mb:g} MB limit",
            )
        try:
            return decode_bytes(
                data, filename, self.cfg.max_pixels, accept_missing_modality=self.cfg.accept_missing_modality
            )
        except ImageTooLargeError as err:
            raise ApiError(413, "too_many_pixels", str(err)) from None
        except NotAssessableError as err:  # e.g. a CT slice: readable, but not a radiograph to score
            raise ApiError(422, "not_assessable", f"{err} (read this study manually)") from None
        except ImageReadError as err:
            raise ApiError(422, "unreadable_image", str(err)) from None
        except MemoryError:
            raise
        except Exception as err:  # a decoder's own failure is still the file's problem: a 4xx
            detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise ApiError(
                422, "unreadable_image", f"{filename}: cannot decode ({type(err).__name__}: {detail})"
            ) from None

    async def load(
        self, data: bytes, filename: str, content_type: str | None
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """(decoded image, (S, S) model input, DICOM header facts), off the event loop so uploads
        decode in parallel."""

        def work() -> tuple[np.ndarray, np.ndarray, dict]:
            image = self.decode(data, filename, content_type)
            try:
                check_assessable(image, filename, min_side(self.run.spec))
            except NotAssessableError as err:
                raise ApiError(422, "not_assessable", f"{err} (read this study manually)") from None
            header = header_fields(data) if is_dicom(filename, data[:132]) else {}
            return image, prepare_image(image, self.run.spec), header

        return await asyncio.to_thread(work)

    async def predict(
        self,
        image: np.ndarray,
        prepared: np.ndarray,
        filename: str,
        heatmap: str | None = None,
        preview: bool = False,
        top: int = 3,
        header: dict | None = None,
        data: bytes | None = None,
        display: bool = False,
        layer: bool = False,
    ) -> dict:
        """Score one decoded image (its (S, S) input, through the pool); add Grad-CAM/preview if asked.

        ``data``: the upload's bytes (its hash names the study; the reading view and feedback need
        them); ``display``: the full-resolution rendering, its windows and header for a reading view;
        ``layer``: the heatmap as a transparent RGBA layer rather than blended into the film.
        """
        if heatmap is not None and heatmap != "top":
            try:
                label_index(self.run.labels, heatmap)
            except (KeyError, ValueError) as err:
                raise ApiError(400, "unknown_label", str(err).strip("'\"")) from None
        prepared = prepared[None]
        scored = (await self._await(self.pool.submit(prepared)))[0]
        result = self.result(scored, filename, image.shape, top, header)
        probs = scored[: len(self.run.labels)]
        if data is not None:
            result["study"] = hashlib.sha256(data).hexdigest()
        if heatmap is not None:
            label = self.top_finding(probs) if heatmap == "top" else heatmap
            draw = self._layer if layer else self._overlay
            png = await self._await(self.pool.submit_call(lambda: draw(image, prepared, label, probs)))
            j = label_index(self.run.labels, label)
            result["heatmap"] = {
                "label": label,
                "method": "gradcam",
                "layer": layer,
                "png_base64": png,
                "probability": float(probs[j]),
                "threshold": float(self.thresholds[j]),
                "above_threshold": bool(probs[j] >= self.thresholds[j]),
                "normalised": "to its own peak (per image)",
                "caption": HEATMAP_CAPTION,
            }
        if preview:
            result["preview_png_base64"] = await asyncio.to_thread(lambda: _png_b64(self._preview(image)))
        if display and data is not None:
            result["display"], result["header"] = await asyncio.to_thread(lambda: self._display(data, image))
        if self.feedback is not None and data is not None:
            await asyncio.to_thread(lambda: self.keep(data, result))
        return result

    def _display(self, data: bytes, image: np.ndarray) -> tuple[dict, dict]:
        """(the reading view's rendering, its windows; the header panel's facts)."""
        dicom = is_dicom("upload", data[:132])
        shown = dicom_display(data, image) if dicom else Display(image)
        pixels = shown.image
        if max(pixels.shape) > DISPLAY_MAX_SIDE:
            from PIL import Image

            k = DISPLAY_MAX_SIDE / max(pixels.shape)
            size = (max(1, round(pixels.shape[1] * k)), max(1, round(pixels.shape[0] * k)))
            pixels = np.asarray(Image.fromarray(pixels, mode="L").resize(size, Image.Resampling.BOX))
        from PIL import Image

        out = {**shown.as_dict(), "png_base64": _png_b64(Image.fromarray(pixels, mode="L"))}
        out["width"], out["height"] = int(pixels.shape[1]), int(pixels.shape[0])
        header = reading_header(data, self.cfg.show_patient_id) if dicom else {}
        return out, header

    def keep(self, data: bytes, result: dict) -> None:
        """With --feedback: record the answer under the study's hash (and keep the image with
        --keep-images), so that a reader's verdict can be tied to what the model said. A storage
        failure (disk full, a locked database) is logged by its type and said in the answer
        (``feedback: "not recorded"``): the scores stand, only the verdict cannot be taken."""
        result.setdefault("study", hashlib.sha256(data).hexdigest())
        try:
            self._keep(data, result)
            result["feedback"] = "recorded"
        except (OSError, sqlite3.Error, ValueError) as err:
            log.warning("feedback store: answer not recorded (%s)", type(err).__name__)
            result["feedback"] = "not recorded"

    def _keep(self, data: bytes, result: dict) -> None:
        image, dicom = None, is_dicom("upload", data[:132])
        if self.cfg.keep_images:
            folder = Path(self.cfg.keep_images)
            folder.mkdir(parents=True, exist_ok=True)
            suffix = ".dcm" if dicom else (".png" if data[:4] == b"\x89PNG" else ".jpg")
            path = folder / f"{result['study']}{suffix}"
            if not path.exists():
                tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            image = str(path.resolve())
        patient = reading_header(data, show_patient=True).get("patient_id") if dicom else None
        self.feedback.record_prediction(result["study"], self.identity, result, image, patient)

    def top_finding(self, probs: np.ndarray) -> str:
        """The finding (not "No Finding") with the highest probability."""
        return top_finding(probs, self.run.labels)

    @staticmethod
    async def _await(future) -> Any:
        """The pool's result without blocking the event loop (Overloaded is raised at submit)."""
        return await asyncio.wrap_future(future)

    def result(
        self, scored: np.ndarray, filename: str, shape: tuple[int, ...], top: int, header: dict | None = None
    ) -> dict:
        """The JSON answer for one image's pool output (probabilities, then the OOD score)."""
        labels = list(self.run.labels)
        probs, ood_score = scored[: len(labels)], float(scored[len(labels)])
        point = self.run.package.operating_point
        score, _ = abnormality_score(probs[None], labels, point.score)
        ood = self.ood_block(ood_score, header or {})
        # the one decision, as every other path (out of distribution: read manually, never "normal")
        flag = str(flag_names(score, point.threshold, [not ood["in_distribution"]])[0])
        if flag == "not scored" or not np.isfinite(probs).all():  # never a flag, never a JSON NaN
            raise ApiError(
                422, "not_scored", f"{filename}: the model gave no finite score; read this study manually"
            )
        s = float(score[0])
        if self.monitor is not None:
            self.monitor.add(
                record(
                    image_id=filename,
                    run=self.monitor.run_id,
                    status=OUT_OF_DISTRIBUTION if flag == OUT_OF_DISTRIBUTION else "scored",
                    flag=flag,
                    triage_score=s,
                    ood_score=ood_score,
                    summary=scored[len(labels) + 1 : -len(PIXEL_STATS)] if self.run.ood is not None else None,
                    pixels=scored[-len(PIXEL_STATS) :],
                    probs=probs,
                    header=header,
                )
            )
        return {
            "filename": filename,
            "image": {"width": int(shape[1]), "height": int(shape[0])},
            "probabilities": {lab: float(p) for lab, p in zip(labels, probs, strict=True)},
            "thresholds": {lab: float(t) for lab, t in zip(labels, self.thresholds, strict=True)},
            "positive": [lab for lab, p, t in zip(labels, probs, self.thresholds, strict=True) if p >= t],
            "top_findings": [f for f in top_findings(probs[None], labels, top)[0].split("; ") if f],
            "triage": {
                "score": s,
                "flag": flag,
                "threshold": point.threshold,
                "target_sensitivity": point.target_sensitivity,
                "score_rule": point.score,
                "band": list(self.band) if self.band else None,
                "borderline": bool(self.band is not None and self.band[0] <= s <= self.band[1]),
            },
            "ood": ood,
        }

    def ood_block(self, score: float, header: dict) -> dict:
        """The answer's ``ood`` part: score (null without a reference), threshold, verdict and reason."""
        ref = self.run.ood
        section = (self.run.members[0].package if self.run.members else self.run.package).ood
        inside, why = ood_decisions(
            np.array([score if ref is not None else -np.inf]),
            1.0 if ref is not None else np.inf,
            [header],
            section,
        )
        return {
            "score": score if np.isfinite(score) else None,  # 1 at the stored threshold, above: flagged
            "threshold": 1.0 if ref is not None else None,
            "method": ref.method if ref is not None else None,
            "in_distribution": bool(inside[0]),
            "reason": why[0],
            "header": header,
        }

    def _layer(self, image: np.ndarray, prepared: np.ndarray, label: str, probs: np.ndarray) -> str:
        return _png_b64(heat_layer_of(self.run, image, prepared, label, self.torch_lock))

    def _overlay(self, image: np.ndarray, prepared: np.ndarray, label: str, probs: np.ndarray) -> str:
        caption = f"{label} {probs[label_index(self.run.labels, label)]:.2f}"
        return _png_b64(overlay_of(self.run, image, prepared, label, caption, self.torch_lock))

    @staticmethod
    def _shrink(image: np.ndarray) -> np.ndarray:
        """The image scaled so its longer side is at most PREVIEW_SIDE (box filter: memory-light)."""
        from PIL import Image

        k = min(1.0, PREVIEW_SIDE / max(image.shape))
        if k >= 1.0:
            return image
        size = (max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k)))
        return np.asarray(Image.fromarray(image, mode="L").resize(size, Image.Resampling.BOX))

    @classmethod
    def _preview(cls, image: np.ndarray):
        from PIL import Image

        return Image.fromarray(cls._shrink(image), mode="L")

    def model_card(self) -> dict:
        """GET /v1/model: what the model predicts and how it was validated."""
        pkg = self.run.package
        return {
            "name": self.run.path.name,
            "model": pkg.model_name,
            "task": pkg.task,
            "labels": list(pkg.labels),
            "threshold_rule": self.threshold_rule,
            "thresholds": {lab: float(t) for lab, t in zip(pkg.labels, self.thresholds, strict=True)},
            "operating_point": pkg.operating_point.as_dict(),
            "input": pkg.input.as_dict(),
            "temperatures": list(pkg.temperatures),
            "validation": pkg.validation,
            "data": pkg.data,
            "warnings": model_warnings(pkg),
            "borderline_band": list(self.band) if self.band else None,
            "digest": self.identity["digest"],
            "feedback": self.feedback is not None,
            "versions": {**pkg.versions, "cxrkit_serving": __version__},
            "engine": self.run.engine,
            "limits": {
                "max_upload_mb": self.cfg.max_upload_mb,
                "max_pixels": self.cfg.max_pixels,
                "max_files": self.cfg.max_files,
                "queue": self.cfg.queue,
            },
        }
