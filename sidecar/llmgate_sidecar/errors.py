"""The sidecar's error vocabulary: every failure a client can see, and how it is classified.

    GatewayError                    -> OpenAI error envelope, status from the class
    ├── BadRequest          400       malformed JSON, wrong types, unsupported parameter
    ├── Unauthorized        401       missing, unknown, disabled or expired virtual key
    ├── Forbidden           403       model not allowed for this key, blocked by guardrail
    ├── NotFound            404       unknown model / path
    ├── PayloadTooLarge     413       request body over the limit
    ├── RateLimited         429       requests/tokens per minute, parallel, budget (Retry-After)
    ├── Unavailable         503       no config loaded yet, store down with failClosed
    └── UpstreamFailed      502/503/504  every target failed; carries the last UpstreamError

    UpstreamError (not a GatewayError: routing decides on it) has an `error_class` from
    ErrorClass (rateLimit, serverError, timeout, connectionError, contextWindow,
    contentFilter) or the non-retriable "auth" / "badRequest" / "malformed".

Raised by routing, auth, limits and the request parsers; turned into responses by the one
error middleware in `app`. Messages never contain provider credentials.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.param = param
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """429; `kind` is bounded (requests, tokens, parallel, budget) for metrics."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, kind: str,
                 code: str | None = None) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})
        self.retry_after = retry_after
        self.kind = kind


class Unavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0,
                 code: str | None = None) -> None:
        super().__init__(message, code=code,
                         headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})


class UpstreamError(Exception):
    """One failed attempt at one target, classified so routing can decide without strings."""

    RETRIABLE = frozenset({"rateLimit", "serverError", "timeout", "connectionError"})

    def __init__(self, error_class: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, provider: str = "", model: str = "",
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.model = model
        self.body = body


class UpstreamFailed(GatewayError):
    """Every target was tried and failed; status from the last failure's class."""

    type = "upstream_error"

    def __init__(self, last: UpstreamError, attempts: int) -> None:
        status, code = _STATUS_FOR_CLASS.get(last.error_class, (502, "upstream_error"))
        if last.error_class in ("badRequest", "contextWindow", "contentFilter") and last.status:
            status = last.status if 400 <= last.status < 500 else 400
        headers = {}
        if last.error_class == "rateLimit":
            headers["Retry-After"] = str(max(1, int((last.retry_after or 1) + 0.999)))
        super().__init__(f"{last.message} (after {attempts} attempt{'s' * (attempts != 1)})",
                         code=code, headers=headers)
        self.status = status
        self.last = last
        self.attempts = attempts
        if status < 500:
            self.type = "invalid_request_error" if status != 429 else "rate_limit_error"


_STATUS_FOR_CLASS: dict[str, tuple[int, str]] = {
    "rateLimit": (429, "upstream_rate_limited"),
    "serverError": (502, "upstream_server_error"),
    "timeout": (504, "upstream_timeout"),
    "connectionError": (503, "upstream_unreachable"),
    "contextWindow": (400, "context_length_exceeded"),
    "contentFilter": (400, "content_filter"),
    "badRequest": (400, "upstream_bad_request"),
    "auth": (502, "upstream_auth_failed"),
    "malformed": (502, "upstream_malformed_response"),
}
