"""Schemathesis against the served OpenAPI schema: generated requests to every operation never get a 5xx."""

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from live import live_server

from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel
from cxrkit.serve.app import create_app


def test_no_generated_request_gets_a_server_error(exported_run):
    schemathesis = pytest.importorskip("schemathesis")
    app = create_app(RunModel.load(exported_run, "cpu", engine="onnx"), ServeConfig(max_upload_mb=1.0))
    with live_server(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/predict", "/v1/predict/batch", "/v1/model", "/health"}
        failures: list[tuple] = []
        for op in operations:
            _fuzz(op, url, failures)
        assert failures == []
        assert httpx.get(f"{url}/health").status_code == 200


def _fuzz(op, url: str, failures: list) -> None:
    """Send generated requests to one operation; record any 5xx."""

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=op.as_strategy())
    def check(case):
        response = case.call(base_url=url, timeout=30)
        if response.status_code >= 500:
            failures.append((op.label, response.status_code, response.text[:200]))

    check()
