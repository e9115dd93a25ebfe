"""HTTP errors of the service: one JSON shape for every error, the handlers, the request observer,
and the ASGI guard that owns the upload limit (413) and the stalled-body timeout (408).

Every error, 404/405/500 included, is ``{"error": code, "message": ...}``; logs and telemetry carry
routes, codes and timings only, never client text or patient data.
"""

import asyncio
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxrkit.config import ServeConfig

log = logging.getLogger("cxrkit.serve")


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class BodyTooLarge(Exception):
    """The request body grew past the limit, or stalled, while it was being received."""


def overloaded(detail: str | None = None) -> ApiError:
    """THE 503 answer of a full pool or queue (Retry-After: 1), built in one place."""
    what = f" ({detail})" if detail else ""
    return ApiError(503, "overloaded", f"the server is busy{what}; retry shortly", {"Retry-After": "1"})


def error_response(err: ApiError) -> JSONResponse:
    """The one JSON error shape; the message is one bounded line (it may quote client input)."""
    message = " ".join(err.message.split())[:500]
    return JSONResponse({"error": err.code, "message": message}, err.status, headers=err.headers)


def method_of(request: Request) -> str:
    """The HTTP method for telemetry labels: a known one, else "other" (never client text)."""
    known = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
    return request.method if request.method in known else "other"


def route_of(request: Request) -> str:
    """The route template (never the raw path: telemetry labels must not carry client text)."""
    return getattr(request.scope.get("route"), "path", "other")


def _count(request: Request, err: ApiError) -> JSONResponse:
    request.app.state.service.telemetry.error(route_of(request), err.code)
    return error_response(err)


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return _count(request, err)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    code = codes.get(err.status_code, "http_error")
    return _count(request, ApiError(err.status_code, code, str(err.detail), err.headers))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    # a bug or an exhausted resource: a JSON 500, counted and logged by type only (no client data)
    log.error("unexpected %s on %s", type(err).__name__, route_of(request))
    request.app.state.service.telemetry.error(route_of(request), "internal")
    if isinstance(err, MemoryError):
        return error_response(
            ApiError(503, "out_of_memory", "not enough memory for this image", {"Retry-After": "5"})
        )
    return error_response(ApiError(500, "internal", f"internal error ({type(err).__name__})"))


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    ctype = request.headers.get("content-type", "")
    json_route = request.url.path == "/v1/feedback"  # the one route that takes JSON, not uploads
    if request.method == "POST" and not json_route and not ctype.startswith("multipart/form-data"):
        e = ApiError(415, "unsupported_type", f"content type {ctype or 'none'!r}; send multipart/form-data")
    else:
        parts = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', ()))}: {d.get('msg')}" for d in err.errors()
        )
        e = ApiError(422, "invalid_request", parts[:500])
    return _count(request, e)


async def _observe(request: Request, call_next):
    """Count and time every request by method, route and status; log the same (never client text)."""
    telemetry = request.app.state.service.telemetry
    rid, t0 = uuid.uuid4().hex[:12], time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:  # answered as a JSON 500 further out; counted and logged here
        path = route_of(request)
        telemetry.observe(method_of(request), path, 500, time.perf_counter() - t0)
        log.info("%s %s %s 500 %.1f ms", rid, request.method, path, (time.perf_counter() - t0) * 1e3)
        raise
    seconds, path = time.perf_counter() - t0, route_of(request)
    telemetry.observe(method_of(request), path, response.status_code, seconds)
    response.headers["X-Request-Id"] = rid
    log.info("%s %s %s %d %.1f ms", rid, request.method, path, response.status_code, seconds * 1e3)
    return response


def add_error_handling(app: FastAPI) -> None:
    """Register the JSON error handlers and the request observer on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.middleware("http")(_observe)


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
        path = scope.get("path", "")
        files = self.cfg.max_files if path.endswith("/batch") else 1
        # a verdict is a few hundred bytes of JSON: 64 KB is plenty and parsing stays cheap
        limit = 65536 if path == "/v1/feedback" else self.cfg.max_upload_mb * 1e6 * files + 65536
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
