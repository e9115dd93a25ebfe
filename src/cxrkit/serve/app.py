"""The HTTP API and web viewer of one run (FastAPI): predict, batch, model card, health, metrics.

Every upload is checked before it costs anything: size (413), declared pixel count (413, e.g. a
decompression bomb), content type (415), decodability (422, naming the file and the reason). A
bad file never reaches the model and never produces a 500. Inference runs in a bounded pool
(``serve.batcher``): a burst beyond the queue gets 503 with Retry-After. Logs hold request ids,
routes, status codes and timings only: never file names or DICOM contents (patient data).
"""

# no ``from __future__ import annotations``: FastAPI reads the route signatures at runtime, and
# they refer to names local to ``create_app``

import asyncio
import base64
import hmac
import io
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxrkit import __version__
from cxrkit.config import ServeConfig
from cxrkit.data.assess import check_assessable
from cxrkit.data.decode import ImageReadError, ImageTooLargeError, NotAssessableError, decode_bytes
from cxrkit.data.transforms import compute_geometry, prepare_image, to_model_input
from cxrkit.evaluate.triage import abnormality_score, flag_names, top_findings
from cxrkit.explain.gradcam import compute_heatmaps, label_index
from cxrkit.explain.overlay import heatmap_to_source, render_overlay
from cxrkit.labels import NO_FINDING
from cxrkit.run.inputs import min_side
from cxrkit.run.model import RunModel
from cxrkit.serve.batcher import Batcher, Overloaded
from cxrkit.serve.metrics import Metrics

log = logging.getLogger("cxrkit.serve")

ACCEPTED_TYPES = {
    "image/png",
    "image/jpeg",
    "image/jpg",
    "application/dicom",
    "application/octet-stream",  # what browsers send for a file type they do not know (a .dcm)
}
THRESHOLD_RULE = "max_f1"  # the per-label thresholds shown beside probabilities (chosen on validation)
PREVIEW_SIDE = 768


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class BodyTooLarge(Exception):
    """The request body grew past the limit, or stalled, while it was being received."""


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
        self.metrics = Metrics()
        # Grad-CAM hooks the PyTorch network: with several workers, no other forward pass may run
        # through it meanwhile (ONNX Runtime sessions are safe to share)
        self.torch_lock = threading.Lock()
        self.pool = Batcher(self._score, cfg.workers, cfg.queue, cfg.max_batch)
        stored = run.package.thresholds_for(THRESHOLD_RULE)
        self.threshold_rule = THRESHOLD_RULE if stored is not None else "0.5"
        self.thresholds = stored if stored is not None else np.full(len(run.labels), 0.5)

    def _score(self, images: np.ndarray) -> np.ndarray:
        if self.run.engine != "torch":
            return self.run.probs(images)
        with self.torch_lock:
            return self.run.probs(images)

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """(decoded image, (S, S) model input), off the event loop so uploads decode in parallel."""

        def work() -> tuple[np.ndarray, np.ndarray]:
            image = self.decode(data, filename, content_type)
            try:
                check_assessable(image, filename, min_side(self.run.spec))
            except NotAssessableError as err:
                raise ApiError(422, "not_assessable", f"{err} (read this study manually)") from None
            return image, prepare_image(image, self.run.spec)

        return await asyncio.to_thread(work)

    async def predict(
        self,
        image: np.ndarray,
        prepared: np.ndarray,
        filename: str,
        heatmap: str | None = None,
        preview: bool = False,
        top: int = 3,
    ) -> dict:
        """Score one decoded image (its (S, S) input, through the pool); add Grad-CAM/preview if asked."""
        if heatmap is not None and heatmap != "top":
            try:
                label_index(self.run.labels, heatmap)
            except (KeyError, ValueError) as err:
                raise ApiError(400, "unknown_label", str(err).strip("'\"")) from None
        prepared = prepared[None]
        probs = (await self._await(self.pool.submit(prepared)))[0]
        result = self.result(probs, filename, image.shape, top)
        if heatmap is not None:
            label = self.top_finding(probs) if heatmap == "top" else heatmap
            png = await self._await(
                self.pool.submit_call(lambda: self._overlay(image, prepared, label, probs))
            )
            result["heatmap"] = {"label": label, "method": "gradcam", "png_base64": png}
        if preview:
            result["preview_png_base64"] = await asyncio.to_thread(lambda: _png_b64(self._preview(image)))
        return result

    def top_finding(self, probs: np.ndarray) -> str:
        """The finding (not "No Finding") with the highest probability."""
        order = np.argsort(-probs, kind="stable")
        return next(
            (self.run.labels[j] for j in order if self.run.labels[j] != NO_FINDING), self.run.labels[order[0]]
        )

    @staticmethod
    async def _await(future) -> Any:
        """The pool's result without blocking the event loop (Overloaded is raised at submit)."""
        return await asyncio.wrap_future(future)

    def result(self, probs: np.ndarray, filename: str, shape: tuple[int, ...], top: int) -> dict:
        """The JSON answer for one image's calibrated probabilities."""
        labels = list(self.run.labels)
        point = self.run.package.operating_point
        score, _ = abnormality_score(probs[None], labels, point.score)
        s = float(score[0])
        return {
            "filename": filename,
            "image": {"width": int(shape[1]), "height": int(shape[0])},
            "probabilities": {lab: float(p) for lab, p in zip(labels, probs, strict=True)},
            "thresholds": {lab: float(t) for lab, t in zip(labels, self.thresholds, strict=True)},
            "positive": [lab for lab, p, t in zip(labels, probs, self.thresholds, strict=True) if p >= t],
            "top_findings": [f for f in top_findings(probs[None], labels, top)[0].split("; ") if f],
            "triage": {
                "score": s,
                "flag": str(flag_names(score, point.threshold)[0]),
                "threshold": point.threshold,
                "target_sensitivity": point.target_sensitivity,
                "score_rule": point.score,
            },
        }

    def _overlay(self, image: np.ndarray, prepared: np.ndarray, label: str, probs: np.ndarray) -> str:
        image = self._shrink(image)  # drawn at display size: a 7,700 px heatmap costs gigabytes
        j = label_index(self.run.labels, label)
        x = to_model_input(prepared, self.run.device)
        with self.torch_lock:
            heat = compute_heatmaps(self.run.model, x, [j], "gradcam")[0].detach().cpu().numpy()
        spec = self.run.spec
        geo = compute_geometry(image.shape[1], image.shape[0], spec.size, spec.mode)
        im = render_overlay(image, heatmap_to_source(heat, geo), caption=f"{label} {probs[j]:.2f}")
        return _png_b64(im)

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
            "versions": {**pkg.versions, "cxrkit_serving": __version__},
            "engine": self.run.engine,
            "limits": {
                "max_upload_mb": self.cfg.max_upload_mb,
                "max_pixels": self.cfg.max_pixels,
                "max_files": self.cfg.max_files,
                "queue": self.cfg.queue,
            },
        }


def load_api_key(cfg: ServeConfig) -> str | None:
    """The key from ``api_key_file`` (stripped), else CXR_API_KEY, else None (no key required)."""
    import os
    from pathlib import Path

    if cfg.api_key_file:
        key = Path(cfg.api_key_file).read_text().strip()
        if not key:
            raise ValueError(f"{cfg.api_key_file}: the API key file is empty")
        return key
    return os.environ.get("CXR_API_KEY") or None


def create_app(run: RunModel, cfg: ServeConfig | None = None, api_key: str | None = None):
    """The FastAPI application serving ``run`` (routes in the module docstring)."""
    cfg = cfg or ServeConfig()
    service = Service(run, cfg)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        service.pool.close()  # the worker threads end with the app

    app = FastAPI(
        lifespan=lifespan,
        title="cxrkit",
        version=__version__,
        description=f"Chest X-ray classification and triage: run {run.path.name} ({run.package.model_name}).",
        docs_url=None,  # Swagger UI loads from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.state.service = service
    app.state.api_key_required = api_key is not None
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def check_key(key: Annotated[str | None, Depends(key_header)]) -> None:
        if api_key is not None and not (key and hmac.compare_digest(key.encode(), api_key.encode())):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")

    def error_response(err: ApiError) -> JSONResponse:
        message = " ".join(err.message.split())[:500]  # one line, bounded: it may quote client input
        return JSONResponse({"error": err.code, "message": message}, err.status, headers=err.headers)

    def method_of(request: Request) -> str:
        """The HTTP method for metrics labels: a known one, else "other" (never client text)."""
        known = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
        return request.method if request.method in known else "other"

    def route_of(request: Request) -> str:
        """The route template (never the raw path: metrics labels must not carry client text)."""
        return getattr(request.scope.get("route"), "path", "other")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        service.metrics.error(route_of(request), err.code)
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        e = ApiError(err.status_code, codes.get(err.status_code, "http_error"), str(err.detail), err.headers)
        service.metrics.error(route_of(request), e.code)
        return error_response(e)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        # a bug or an exhausted resource: a JSON 500, counted and logged by type only (no client data)
        log.error("unexpected %s on %s", type(err).__name__, route_of(request))
        service.metrics.error(route_of(request), "internal")
        if isinstance(err, MemoryError):
            return error_response(
                ApiError(503, "out_of_memory", "not enough memory for this image", {"Retry-After": "5"})
            )
        return error_response(ApiError(500, "internal", f"internal error ({type(err).__name__})"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and not ctype.startswith("multipart/form-data"):
            e = ApiError(
                415, "unsupported_type", f"content type {ctype or 'none'!r}; send multipart/form-data"
            )
        else:
            parts = "; ".join(
                f"{'.'.join(str(x) for x in d.get('loc', ()))}: {d.get('msg')}" for d in err.errors()
            )
            e = ApiError(422, "invalid_request", parts[:500])
        service.metrics.error(route_of(request), e.code)
        return error_response(e)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # answered as a JSON 500 further out; counted and logged here
            path = route_of(request)
            service.metrics.observe(method_of(request), path, 500, time.perf_counter() - t0)
            log.info("%s %s %s 500 %.1f ms", rid, request.method, path, (time.perf_counter() - t0) * 1e3)
            raise
        seconds = time.perf_counter() - t0
        path = route_of(request)
        service.metrics.observe(method_of(request), path, response.status_code, seconds)
        response.headers["X-Request-Id"] = rid
        log.info("%s %s %s %d %.1f ms", rid, request.method, path, response.status_code, seconds * 1e3)
        return response

    def admit() -> None:
        if service.pool.in_flight >= service.pool.limit:
            raise ApiError(503, "overloaded", "the server is busy; retry shortly", {"Retry-After": "1"})

    async def read_upload(upload: UploadFile) -> bytes:
        cap = int(cfg.max_upload_mb * 1e6) + 1
        data = await upload.read(cap)
        return data

    async def one(upload: UploadFile, heatmap: str | None, preview: bool, top: int) -> dict:
        name = clean_name(upload.filename)
        data = await read_upload(upload)
        image, prepared = await service.load(data, name, upload.content_type)
        try:
            out = await service.predict(image, prepared, name, heatmap, preview, top)
        except Overloaded as err:
            raise ApiError(
                503, "overloaded", f"the server is busy ({err}); retry shortly", {"Retry-After": "1"}
            ) from None
        service.metrics.scored("ok")
        return out

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Liveness: 200 while the service can take requests."""
        return {"status": "ok", "engine": run.engine, "in_flight": service.pool.in_flight}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus text: request counts and latencies by route, errors by code, in-flight requests."""
        return service.metrics.render(service.pool.in_flight, run.engine)

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(check_key)])
    def model() -> dict:
        """Labels, thresholds, operating point, input spec, versions and validation figures."""
        return service.model_card()

    @app.post("/v1/predict", tags=["predict"], dependencies=[Depends(check_key)])
    async def predict(
        file: Annotated[UploadFile, File(description="one PNG, JPEG or DICOM file")],
        heatmap: Annotated[
            str | None,
            Query(
                description="a label, or `top` for the top finding: adds its Grad-CAM overlay (PNG, base64)"
            ),
        ] = None,
        preview: Annotated[
            bool, Query(description="add the decoded image as PNG (base64), for viewers")
        ] = False,
        top: Annotated[int, Query(ge=1, le=20, description="how many top findings to list")] = 3,
    ) -> dict:
        """One image -> calibrated probabilities, thresholds, triage score and flag, top findings."""
        admit()
        try:
            return await one(file, heatmap, preview, top)
        except ApiError:
            service.metrics.scored("error")
            raise

    @app.post("/v1/predict/batch", tags=["predict"], dependencies=[Depends(check_key)])
    async def predict_batch(
        files: Annotated[list[UploadFile], File(description="PNG, JPEG or DICOM files")],
        top: Annotated[int, Query(ge=1, le=20, description="how many top findings to list")] = 3,
    ) -> dict:
        """Several images -> one result or one error per file, in upload order."""
        if len(files) > cfg.max_files:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {cfg.max_files} per request")
        admit()
        images, results = [], []
        for f in files:
            name = clean_name(f.filename)
            try:
                image, prep = await service.load(await read_upload(f), name, f.content_type)
                images.append((len(results), name, image.shape, prep))  # the shape only: memory stays flat
                results.append(None)
            except ApiError as err:
                service.metrics.scored("error")
                results.append(
                    {"filename": name, "error": err.code, "message": err.message, "status": err.status}
                )
        if images:
            batch = np.stack([prep for _, _, _, prep in images])
            try:
                probs = await asyncio.wrap_future(service.pool.submit(batch))
            except Overloaded as err:
                raise ApiError(
                    503, "overloaded", f"the server is busy ({err})", {"Retry-After": "1"}
                ) from None
            for (k, name, shape, _), p in zip(images, probs, strict=True):
                results[k] = service.result(p, name, shape, top)
                service.metrics.scored("ok")
        return {"results": results}

    static = resources.files("cxrkit").joinpath("serve/static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(static.joinpath("index.html")), media_type="text/html")

    types = {"js": "text/javascript", "css": "text/css"}
    assets = {
        f.name: types[f.name.rsplit(".", 1)[-1]] for f in static.iterdir() if f.name.endswith((".js", ".css"))
    }

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str):
        if name not in assets:  # the shipped files only: client text never reaches the filesystem
            raise ApiError(404, "not_found", "no such asset")
        return FileResponse(str(static.joinpath(name)), media_type=assets[name])

    return LimitBody(app, cfg)


class LimitBody:
    """ASGI wrapper: a body past the upload limit (even without Content-Length) gets 413, and a body
    that stalls for ``body_timeout_s`` gets 408 (slow clients must not hold a connection forever).

    Receiving stops there; whatever the app answers to the cut body is replaced by that answer.
    """

    def __init__(self, app, cfg: ServeConfig) -> None:
        self.app, self.cfg = app, cfg
        self.state = app.state  # tests and the server reach the service through here

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        files = self.cfg.max_files if scope.get("path", "").endswith("/batch") else 1
        limit = self.cfg.max_upload_mb * 1e6 * files + 65536
        seen, done, sent, started = 0, False, False, False
        cut: tuple[int, bytes] | None = None

        async def guarded_receive():
            nonlocal seen, done, cut
            if cut is not None:
                return {"type": "http.disconnect"}
            if done:  # the body is complete: what follows is a wait for disconnect, without a timeout
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.cfg.body_timeout_s)
            except asyncio.TimeoutError:
                cut = (408, b'{"error":"timeout","message":"the request body stalled; send it at once"}')
                raise BodyTooLarge() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > limit:
                    cut = (413, b'{"error":"too_large","message":"request body is over the upload limit"}')
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal sent, started
            if cut is None:
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not sent:
                sent = True
                status, body = cut
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})

        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:  # refused before a byte of the body is read
            cut = (413, b'{"error":"too_large","message":"request body is over the upload limit"}')
            return await guarded_send({"type": "http.response.start"})
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception as err:
            if cut is not None:
                await guarded_send({"type": "http.response.start"})
            elif started:  # already answered (a JSON 500): log the type only, never client data
                log.error("request failed after its answer was sent: %s", type(err).__name__)
            else:
                raise
