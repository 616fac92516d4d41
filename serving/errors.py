"""JSON errors and request guards of the MoMu HTTP API.

Every error is {"error": <class>, "detail": [{"field": ..., "reason": ...}]}:
  400 malformed_json      the body is not JSON (or a Content-Length header is not a number)
  401 unauthorized        an API key is configured and x-api-key is missing or wrong (/v1 routes only)
  404 not_found           unknown route
  413 payload_too_large   the body is over limits.max_body_bytes
  422 invalid_request     a value is wrong: type, empty or too long text, invalid SMILES, k or item count over limits
  503 not_configured      the route's index is not configured on this server
  503 unavailable         a backend deployment failed or is busy (never caused by the request's content)
  504 timeout             a generation did not answer within its time budget plus a grace period

Settings live in this module (not in serving.app) because Serve pickles the ingress class by value when it is
decorated: module state referenced from here is shared by the middleware and the replica's constructor.
"""

import hmac
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.validation import InputError, field_name

log = logging.getLogger("ray.serve")

API_KEY_HEADER = "x-api-key"

# Per-replica settings (set by the ingress constructor through configure()).
SETTINGS: dict = {"max_body_bytes": 262_144, "api_key": None}


def configure(max_body_bytes: int, api_key) -> None:
    SETTINGS.update(max_body_bytes=int(max_body_bytes), api_key=api_key or None)


def error_response(status: int, error: str, details: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": [
        {"field": f, "reason": r} for f, r in details]})


class NotConfigured(Exception):
    """A route whose backing index is not part of this deployment (503 not_configured)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Unavailable(Exception):
    """A backend that cannot take the request now (503 unavailable), e.g. every generator busy past the budget."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Timeout(Exception):
    """A backend that did not answer within the request's time budget (504 timeout)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error") or e.get("msg", "invalid JSON")
            return error_response(400, "malformed_json", [("", f"request body is not valid JSON: {reason}")])
    details = []
    for e in errors:
        field = field_name(e.get("loc", ()))
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "missing" and not field:
            msg = "a JSON request body is required"
        details.append((field, msg.removeprefix("Value error, ")))
    return error_response(422, "invalid_request", details)


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return error_response(exc.status, "invalid_request", [(exc.field, exc.reason)])


async def _not_configured(request: Request, exc: NotConfigured) -> JSONResponse:
    return error_response(503, "not_configured", [("", exc.reason)])


async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return error_response(503, "unavailable", [("", exc.reason)])


async def _timeout(request: Request, exc: Timeout) -> JSONResponse:
    return error_response(504, "timeout", [("", exc.reason)])


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
             413: "payload_too_large"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error, [("", str(exc.detail))])


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A failed or restarting backend replica; bad input never gets here (it is checked before any backend call).
    log.exception("request %s %s failed", request.method, request.url.path)
    return error_response(503, "unavailable", [("", f"backend error ({type(exc).__name__}); retry shortly")])


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(NotConfigured, _not_configured)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(Timeout, _timeout)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class ServerTimingMiddleware:
    """Adds `Server-Timing: app;dur=<ms>` to every HTTP response: the time from the request entering this replica's
    ASGI app to the response's first byte (validation, models, index, serialisation). A client's latency minus it
    is what the proxy, HTTP and Ray Serve's routing add (benchmarks/serve_load.py reports the split)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                elapsed = 1000 * (time.perf_counter() - started)
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"server-timing"]
                headers.append((b"server-timing", f"app;dur={elapsed:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, timed_send)


class GuardMiddleware:
    """Pure ASGI middleware, run before FastAPI reads anything: refuses bodies over `max_body_bytes` (413; by
    Content-Length, or counted while reading a body sent without one) and, when an API key is configured, /v1
    requests without the right `x-api-key` header (401, compared in constant time)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = SETTINGS.get("api_key")
        if key and scope.get("path", "").startswith("/v1"):
            given = headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), key.encode()):
                reason = f"{'missing' if not given else 'wrong'} API key (send it in the {API_KEY_HEADER} header)"
                return await error_response(401, "unauthorized", [(API_KEY_HEADER, reason)])(scope, receive, send)
        limit = int(SETTINGS["max_body_bytes"])
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await error_response(400, "malformed_request", [("content-length", "not a number")])(
                    scope, receive, send)
            if int(length) > limit:
                return await self._too_large(str(int(length)), limit, scope, receive, send)
            return await self.app(scope, receive, send)
        # No Content-Length (chunked upload): read the body up to the limit, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await self._too_large(f"more than {limit}", limit, scope, receive, send)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(size: str, limit: int, scope, receive, send):
        return await error_response(413, "payload_too_large", [
            ("", f"request body is {size} bytes; the limit is {limit} (limits.max_body_bytes)")])(scope, receive, send)
