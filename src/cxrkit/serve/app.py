"""The HTTP API and web viewer of one run (FastAPI): the app factory.

``service.py`` decodes, checks and scores uploads; ``routes.py`` holds the routes (an APIRouter, the
service as a dependency); ``errors.py`` the one JSON error shape, the handlers, the request observer
and the body guard (413 over the upload limit, 408 on a stalled body). Every upload is checked
before it costs anything: a bad file never reaches the model and never produces a 500. Inference
runs in a bounded pool (``serve.batcher``): a burst beyond the queue gets 503 with Retry-After.
Logs hold request ids, routes, status codes and timings only: never file names or DICOM contents.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from cxrkit import __version__
from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel
from cxrkit.serve.errors import ApiError, LimitBody, add_error_handling
from cxrkit.serve.routes import router
from cxrkit.serve.service import Service, clean_name

__all__ = ["ApiError", "LimitBody", "Service", "clean_name", "create_app", "load_api_key"]


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


def create_app(run: RunModel, cfg: ServeConfig | None = None, api_key: str | None = None) -> LimitBody:
    """The application serving ``run``: FastAPI with the routes, error handling and the body guard."""
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
    app.state.api_key = api_key
    app.state.api_key_required = api_key is not None
    add_error_handling(app)
    app.include_router(router)
    return LimitBody(app, cfg)
