"""JSON log lines (one object per line, `extra` fields included) for every llmgate process.

Configured once by the process entry points; modules only call `logging.getLogger`.
`log_request` writes the sidecar's one line per API request. Never put keys, credentials or
prompts in `extra`; as a second line of defence the formatter masks anything shaped like a
virtual key, an `sk-` provider key or a bearer token before a line is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from llmgate_sidecar.observability.record import RequestRecord

REQUEST_LOGGER = "llmgate.request"
_request_log = logging.getLogger(REQUEST_LOGGER)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message", "asctime", "taskName"}
# Virtual keys (lg-...), OpenAI/Anthropic-style keys (sk-..., sk-ant-...), bearer tokens.
_SECRET = re.compile(r"\b(?:lg|sk)-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}")
_MASK = "[REDACTED]"
_NO_METADATA: Mapping[str, str] = {}  # never changed: the line of a request without a key


def redact(text: str) -> str:
    # _SECRET can only match where "lg-", "sk-" or (any case) "bearer" occurs: three
    # substring searches rule out almost every line at a tenth of the pattern's cost.
    if "lg-" in text or "sk-" in text or "bearer" in text.lower():
        return _SECRET.sub(_MASK, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON line carries none of the caller's file/line, thread or process fields, so
    # the logging module need not look them up for each record (the logging HOWTO's
    # "Optimization" switches): the stack walk alone was ~4 us of every request's line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # aiohttp's access log duplicates our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def request_fields(record: RequestRecord, elapsed: float) -> dict[str, Any]:
    """The fields of the per-request line (names documented in docs/observability.md)."""
    return {
        "request_id": record.request_id, "route": record.route,
        "provider": record.provider, "model": record.model,
        "virtual_key": record.virtual_key,
        "key_metadata": record.key_metadata or _NO_METADATA, "status": record.status,
        "status_class": record.status_class, "stream": record.stream,
        "attempts": record.attempts, "fallbacks": record.fallbacks,
        "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "cost_usd": None if record.cost_usd is None else float(record.cost_usd),
        "overhead_ms": None if record.overhead_s is None else round(record.overhead_s * 1000, 3),
        "latency_ms": round(elapsed * 1000, 3), "error": record.error}


def log_request(record: RequestRecord, elapsed: float) -> None:
    """One line per API request: info when answered, warning for gateway/upstream failures."""
    logger = _request_log
    level = logging.WARNING if record.status >= 500 or record.status_class == "5xx" \
        else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(level, "request", extra=request_fields(record, elapsed))
