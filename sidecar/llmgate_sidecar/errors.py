"""The sidecar's error vocabulary: every failure a client can see, and how it is classified.

    GatewayError                    -> OpenAI error envelope, status from the class
    ├── BadRequest          400       malformed JSON, wrong types, unsupported parameter
    ├── Unauthorized        401       missing, unknown, disabled or expired virtual key
    ├── Forbidden           403       model not allowed for this key, blocked by guardrail
    ├── NotFound            404       unknown model / path
    ├── RequestTimeout      408       the client did not send its body in time
    ├── PayloadTooLarge     413       request body over the limit
    ├── RateLimited         429       requests/tokens per minute, parallel, budget (Retry-After)
    ├── Unavailable         503       no config loaded yet, store down with failClosed
    └── UpstreamFailed      502/503/504  every target failed; carries the last UpstreamError

    UpstreamError (not a GatewayError: routing decides on it) has an `error_class` from
    ErrorClass (rateLimit, serverError, timeout, connectionError, contextWindow,
    contentFilter) or the non-retriable "auth" / "badRequest" / "malformed", and the
    OpenAI-shaped `type`/`code`/`param` the client sees (an OpenAI-family upstream's own,
    or the adapter's mapping of another provider's error onto OpenAI's codes).

A GatewayError's `code` is what the client branches on; its `reason` is llmgate's own
code for metrics and logs (the same, except for UpstreamFailed, whose envelope also
carries it as `llmgate.code` next to the provider and the upstream status).

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
        self.reason = self.code
        self.param = param
        self.headers = dict(headers or {})
        self.extra: dict[str, Any] = {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param, **self.extra}}


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


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


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
                 body: dict[str, Any] | None = None, error_type: str | None = None,
                 code: str | None = None, param: str | None = None,
                 unsent: bool = False) -> None:
        super().__init__(message)
        self.error_class = error_class
        # The request provably never reached the upstream (connect failed, deadline passed
        # before sending): nothing can have been billed.
        self.unsent = unsent
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.model = model
        self.body = body
        # What the client sees in OpenAI's terms; None: llmgate's own code for the class.
        self.type, self.code, self.param = error_type, code, param


def may_have_billed(exc: UpstreamError) -> bool:
    """Whether the upstream may bill the failed try: it was sent and no HTTP error status
    came back (a timeout, a connection lost after sending, a 2xx that could not be read)."""
    return not exc.unsent and exc.status is None


class UpstreamFailed(GatewayError):
    """Every target was tried and failed; status from the last failure's class."""

    type = "upstream_error"

    def __init__(self, last: UpstreamError, attempts: int) -> None:
        status, reason = _STATUS_FOR_CLASS.get(last.error_class, (502, "upstream_error"))
        if last.error_class in ("badRequest", "contextWindow", "contentFilter") and last.status:
            status = last.status if 400 <= last.status < 500 else 400
        headers = {}
        if last.error_class == "rateLimit":
            headers["Retry-After"] = str(max(1, int((last.retry_after or 1) + 0.999)))
        mapped_type, mapped_code, param = openai_reason(last.error_class, last.status,
                                                        last.param)
        super().__init__(f"{last.message} (after {attempts} attempt{'s' * (attempts != 1)})",
                         code=last.code or mapped_code or reason, param=last.param or param,
                         headers=headers)
        self.status = status
        self.reason = reason
        self.last = last
        self.attempts = attempts
        if last.type or mapped_type:
            self.type = last.type or mapped_type or self.type
        elif status < 500:
            self.type = "invalid_request_error" if status != 429 else "rate_limit_error"
        self.extra = {"llmgate": {"code": reason, "provider": last.provider,
                                  "upstream_status": last.status, "attempts": attempts}}


def openai_reason(error_class: str, status: int | None,
                  param: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(type, code, param) in OpenAI's terms for an upstream error of `error_class` that did
    not say them itself: the codes OpenAI uses and apps branch on. None for what llmgate
    reports with its own codes (5xx, timeouts, malformed answers)."""
    if error_class == "contextWindow":
        return "invalid_request_error", "context_length_exceeded", param or "messages"
    if error_class == "contentFilter":
        return "invalid_request_error", "content_filter", param
    if error_class == "rateLimit":
        return "rate_limit_error", "rate_limit_exceeded", None
    if error_class == "auth":
        return "authentication_error", "invalid_api_key", None
    if error_class == "badRequest" and status == 404:
        return "invalid_request_error", "model_not_found", "model"
    if error_class == "badRequest":
        return "invalid_request_error", "invalid_value" if param else None, param
    return None, None, None


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
