"""``cxr serve``: load a run (and its ONNX engine when exported), build the app, run uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel


def build_app(run_dir: str | Path, cfg: ServeConfig):
    """The ASGI app serving the run at ``run_dir`` with ``cfg`` (API key from its file or CXR_API_KEY)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ImportError("cxr serve needs FastAPI and uvicorn: pip install 'cxrkit[serve]'") from None
    from cxrkit.serve.app import create_app, load_api_key

    run = RunModel.load(run_dir, "cpu", cfg.engine)
    return create_app(run, cfg, load_api_key(cfg))


def serve(run_dir: str | Path, cfg: ServeConfig) -> None:
    """Serve until interrupted; logs go to stderr without file names or patient data."""
    import uvicorn

    app = build_app(run_dir, cfg)
    service = app.state.service
    logging.getLogger("cxrkit.serve").setLevel(logging.INFO)
    url = f"http://{cfg.host}:{cfg.port}"
    key = " (X-API-Key required on /v1)" if service_requires_key(app) else ""
    run = service.run
    print(f"serving {run.path} ({run.package.model_name}, engine {run.engine}) at {url}{key}", flush=True)
    print(f"  viewer {url}/  schema {url}/openapi.json  health {url}/health  metrics {url}/metrics")
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  note: listening on {cfg.host}: reachable from other machines", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False)


def service_requires_key(app) -> bool:
    """Whether the app asks for an API key."""
    return bool(getattr(app.state, "api_key_required", False))
