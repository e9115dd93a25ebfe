"""The routes of the HTTP API and the viewer, on one APIRouter; the service comes in as a dependency.

``/health`` and ``/metrics`` (service), ``/v1/model``, ``/v1/predict``, ``/v1/predict/batch`` (behind
the API key when one is set), ``/`` and ``/static/{name}`` (the viewer's shipped files only).
"""

# no ``from __future__ import annotations``: FastAPI reads the route signatures at runtime

import asyncio
import functools
import hmac
import re
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from cxrkit.serve.batcher import Overloaded
from cxrkit.serve.errors import ApiError, overloaded
from cxrkit.serve.service import Service, clean_name
from cxrkit.workflows.feedback import UnknownStudyError

router = APIRouter()
READER = re.compile(r"[\w .@'-]{1,64}")  # a reader's name or login, nothing that could be markup
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_STATIC = resources.files("cxrkit").joinpath("serve/static")
_ASSETS = {"js": "text/javascript", "css": "text/css"}


@functools.cache
def _shipped_assets() -> frozenset[str]:
    """The viewer's scripts and styles, listed once (not on every request)."""
    return frozenset(f.name for f in _STATIC.iterdir() if f.name.endswith((".js", ".css")))


def get_service(request: Request) -> Service:
    """The app's service (its run, engine, pool and limits)."""
    return request.app.state.service


def check_key(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """401 unless the X-API-Key header matches the app's key (when it has one)."""
    api_key = request.app.state.api_key
    if api_key is not None and not (key and hmac.compare_digest(key.encode(), api_key.encode())):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")


ServiceDep = Annotated[Service, Depends(get_service)]
Top = Annotated[int, Query(ge=1, le=20, description="how many top findings to list")]


def admit(service: Service) -> None:
    """503 before any work when the pool and its queue are full."""
    if service.pool.in_flight >= service.pool.limit:
        raise overloaded()


async def read_upload(service: Service, upload: UploadFile) -> bytes:
    """The upload's bytes, at most one byte over the limit (the size check then names it)."""
    return await upload.read(int(service.cfg.max_upload_mb * 1e6) + 1)


@router.get("/health", tags=["service"])
def health(service: ServiceDep) -> dict:
    """Liveness: 200 while the service can take requests."""
    return {"status": "ok", "engine": service.run.engine, "in_flight": service.pool.in_flight}


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
def metrics(service: ServiceDep) -> str:
    """Prometheus text: request counts and latencies by route, errors by code, in-flight requests."""
    text = service.telemetry.render(service.pool.in_flight, service.run.engine)
    return text + (service.monitor.render() if service.monitor is not None else "")


@router.get("/v1/model", tags=["model"], dependencies=[Depends(check_key)])
def model(service: ServiceDep) -> dict:
    """Labels, thresholds, operating point, input spec, versions and validation figures."""
    return service.model_card()


@router.post("/v1/predict", tags=["predict"], dependencies=[Depends(check_key)])
async def predict(
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="one PNG, JPEG or DICOM file")],
    heatmap: Annotated[
        str | None,
        Query(description="a label, or `top` for the top finding: adds its Grad-CAM overlay (PNG, base64)"),
    ] = None,
    preview: Annotated[bool, Query(description="add the decoded image as PNG (base64), for viewers")] = False,
    top: Top = 3,
    display: Annotated[
        bool, Query(description="add the full-resolution rendering, its windows and the DICOM header")
    ] = False,
    layer: Annotated[
        bool, Query(description="the heatmap as a transparent RGBA layer (for viewers)")
    ] = False,
) -> dict:
    """One image -> calibrated probabilities, thresholds, triage score and flag, top findings."""
    admit(service)
    try:
        name = clean_name(file.filename)
        data = await read_upload(service, file)
        image, prepared, header = await service.load(data, name, file.content_type)
        try:
            out = await service.predict(
                image, prepared, name, heatmap, preview, top, header, data=data, display=display, layer=layer
            )
        except Overloaded as err:
            raise overloaded(str(err)) from None
    except ApiError:
        service.telemetry.scored("error")
        raise
    service.telemetry.scored("ok")
    return out


@router.post("/v1/predict/batch", tags=["predict"], dependencies=[Depends(check_key)])
async def predict_batch(
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description="PNG, JPEG or DICOM files")],
    top: Top = 3,
) -> dict:
    """Several images -> one result or one error per file, in upload order."""
    if len(files) > service.cfg.max_files:
        raise ApiError(
            413, "too_many_files", f"{len(files)} files; at most {service.cfg.max_files} per request"
        )
    admit(service)
    images, results = [], []
    for f in files:
        name = clean_name(f.filename)
        try:
            data = await read_upload(service, f)
            image, prep, header = await service.load(data, name, f.content_type)
            # the shape, not the image: memory stays flat; the bytes only when feedback keeps them
            kept = data if service.feedback is not None else None
            images.append((len(results), name, image.shape, header, prep, kept))
            results.append(None)
        except ApiError as err:
            service.telemetry.scored("error")
            results.append(
                {"filename": name, "error": err.code, "message": err.message, "status": err.status}
            )
    if images:
        try:
            probs = await asyncio.wrap_future(service.pool.submit(np.stack([item[4] for item in images])))
        except Overloaded as err:
            raise overloaded(str(err)) from None
        for (k, name, shape, header, _, kept), p in zip(images, probs, strict=True):
            try:
                results[k] = service.result(p, name, shape, top, header)
                service.telemetry.scored("ok")
                if kept is not None:  # a verdict on a batch study needs its answer recorded too
                    await asyncio.to_thread(service.keep, kept, results[k])
            except ApiError as err:  # this file's answer only: the others in the batch stand
                service.telemetry.scored("error")
                results[k] = {
                    "filename": name,
                    "error": err.code,
                    "message": err.message,
                    "status": err.status,
                }
    return {"results": results}


class Verdict(BaseModel):
    """A reader's verdict on one study (its ``study`` hash from the /v1/predict answer)."""

    study: str = Field(pattern="^[0-9a-f]{64}$")
    triage: Literal["agree", "disagree"] | None = None
    findings: dict[str, Literal["present", "absent", "unsure"]] = Field(default_factory=dict, max_length=64)
    comment: str = Field("", max_length=2000)


def feedback_store(service: Service):
    """The service's feedback database, or 404 when it was started without one."""
    if service.feedback is None:
        raise ApiError(
            404,
            "feedback_disabled",
            "this service keeps no feedback: start it with `cxr serve RUN --feedback DB`",
        )
    return service.feedback


@router.post("/v1/feedback", tags=["feedback"], dependencies=[Depends(check_key)])
async def post_feedback(service: ServiceDep, verdict: Verdict, request: Request) -> dict:
    """Store a reader's verdict (agree/disagree with the flag, per finding present/absent/unsure)."""
    store = feedback_store(service)
    reader = service.cfg.reader
    if service.cfg.reader_header:  # trusted only where the deployment says a proxy sets it
        given = request.headers.get(service.cfg.reader_header, "").strip()
        if given and not READER.fullmatch(given):
            raise ApiError(400, "bad_reader", f"{service.cfg.reader_header}: expected a name of 1-64 letters")
        reader = given or reader
    try:
        return await asyncio.to_thread(
            store.add_feedback, verdict.study, verdict.triage, verdict.findings, verdict.comment, reader
        )
    except UnknownStudyError as err:  # no prediction recorded: nothing to tie the verdict to
        raise ApiError(404, "unknown_study", str(err)) from None
    except ValueError as err:
        raise ApiError(400, "bad_feedback", str(err)) from None


@router.get("/v1/feedback", tags=["feedback"], dependencies=[Depends(check_key)])
async def get_feedback(
    service: ServiceDep, request: Request, limit: Annotated[int, Query(ge=1, le=10000)] = 100
) -> dict:
    """The stored verdicts, newest first."""
    store = feedback_store(service)
    rows = await asyncio.to_thread(store.feedback, limit)
    if request.app.state.api_key_required:
        return {"feedback": rows}
    # without a key anyone on the network can read this route: free text (it may name a patient) stays
    # in the database
    return {"feedback": [{**r, "comment": None} for r in rows], "comments": "hidden: set an API key"}


@router.get("/", include_in_schema=False)
def index():
    """The viewer's page."""
    return FileResponse(str(_STATIC.joinpath("index.html")), media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
def asset(name: str):
    """The viewer's shipped scripts and styles; client text never reaches the filesystem."""
    if name not in _shipped_assets():
        raise ApiError(404, "not_found", "no such asset")
    return FileResponse(str(_STATIC.joinpath(name)), media_type=_ASSETS[name.rsplit(".", 1)[-1]])
