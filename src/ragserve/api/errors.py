"""The only place errors become HTTP responses. Every error body is ``{"error": {"code", "message",
"request_id"}}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragserve import errors
from ragserve.api.middleware import route_template
from ragserve.observability.metrics import HTTP_ERRORS

_STATUS: dict[type[errors.RagserveError], int] = {
    errors.InvalidRequestError: 400,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.PayloadTooLargeError: 413,
    errors.UnsupportedMediaTypeError: 415,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.DocumentParseError: 422,
    errors.RateLimitedError: 429,
    errors.ServiceUnavailableError: 503,
}

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_of(exc: errors.RagserveError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    HTTP_ERRORS.labels(route=route_template(request.scope), status=str(status), code=code).inc()
    body = {"error": {"code": code, "message": message, "request_id": request_id_of(request)}}
    return JSONResponse(body, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    problems = exc.errors()
    for problem in problems:
        if problem.get("type") == "json_invalid":
            return 400, "invalid_json", f"the request body is not valid JSON: {problem.get('msg', '')}"
    parts = []
    for problem in problems[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
    return 422, "validation_error", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.RagserveError)
    async def _ragserve(request: Request, exc: errors.RagserveError) -> JSONResponse:
        response = error_response(request, status_of(exc), exc.code, exc.message)
        if isinstance(exc, errors.RateLimitedError) and exc.retry_after_seconds is not None:
            response.headers["Retry-After"] = str(max(1, exc.retry_after_seconds))
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        return error_response(request, status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        response = error_response(request, 500, "internal_error", "an unexpected error occurred; see the server log")
        # Starlette answers this one outside the middleware that adds the header to every other response.
        response.headers["X-Request-ID"] = request_id_of(request)
        return response
