"""HTTP API and web viewer for a run (optional extra ``cxrkit[serve]``: FastAPI, uvicorn, ONNX Runtime)."""
