"""Optional OpenTelemetry tracing: a span per request, per upstream attempt, per store call.

An extra: needs `opentelemetry-sdk` and `opentelemetry-exporter-otlp-proto-http`, and is
switched on by the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) env
var, read once on first use. Unconfigured, every helper returns a shared no-op context
after one flag check: no OpenTelemetry import, no allocation. Attribute names follow the
OpenTelemetry GenAI semantic conventions. Never puts prompts or keys on a span.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from llmgate_sidecar.observability.record import RequestRecord

log = logging.getLogger("llmgate.tracing")

_NOOP: AbstractContextManager[Any] = nullcontext(None)
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class _State:
    """The process's tracer; OpenTelemetry's own provider is process-global too."""

    tracer: Any = None
    decided = False


def configure(provider: Any = None) -> bool:
    """Trace with `provider` (tests), or from the OTEL_* environment; True if tracing.

    Missing packages with an endpoint configured are reported once and tracing stays off."""
    _State.decided = True
    _State.tracer = None
    if provider is None:
        if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or not any(
                os.environ.get(name) for name in _ENDPOINT_VARS):
            return False
        try:
            provider = _otlp_provider()
        except ImportError as exc:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is off: %s "
                        "(install llmgate[tracing])", exc)
            return False
    _State.tracer = provider.get_tracer("llmgate.sidecar")
    return True


def reset() -> None:
    """Forget the tracer; the next use reads the environment again."""
    _State.tracer, _State.decided = None, False


def enabled() -> bool:
    if not _State.decided:
        configure()
    return _State.tracer is not None


def _otlp_provider() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               "llmgate-sidecar")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def request_span(headers: Mapping[str, str]) -> AbstractContextManager[Any]:
    """The SERVER span of one API request, continuing the caller's `traceparent`."""
    if not enabled():
        return _NOOP
    from opentelemetry import propagate, trace

    return _State.tracer.start_as_current_span(  # type: ignore[no-any-return]
        "chat", context=propagate.extract(dict(headers)), kind=trace.SpanKind.SERVER,
        attributes={"gen_ai.operation.name": "chat"})


def span(name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Any]:
    """A CLIENT span for one upstream attempt or store call (no-op when not tracing)."""
    if not enabled():
        return _NOOP
    from opentelemetry import trace

    return _State.tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, kind=trace.SpanKind.CLIENT, attributes=dict(attributes))


def attempt_span(provider: str, model: str, route: str) -> AbstractContextManager[Any]:
    """For routing: wrap one upstream attempt (`chat <model>`, GenAI attributes)."""
    if not enabled():
        return _NOOP
    return span(f"chat {model}", {"gen_ai.operation.name": "chat",
                                  "gen_ai.provider.name": provider,
                                  "gen_ai.request.model": model, "llmgate.route": route})


def annotate(current: Any, record: RequestRecord) -> None:
    """Put what the request did on its span (nothing when not tracing)."""
    if current is None:
        return
    current.update_name(f"chat {record.route}")
    attributes: dict[str, Any] = {
        "llmgate.request_id": record.request_id, "llmgate.route": record.route,
        "llmgate.virtual_key": record.virtual_key, "gen_ai.provider.name": record.provider,
        "gen_ai.response.model": record.model,
        "http.response.status_code": record.status, "llmgate.attempts": record.attempts}
    if record.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = record.input_tokens
    if record.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = record.output_tokens
    if record.cache_read_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = record.cache_read_tokens
    if record.cache_write_tokens:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = record.cache_write_tokens
    if record.cost_usd is not None:
        attributes["llmgate.cost_usd"] = float(record.cost_usd)
    if record.error is not None:
        attributes["error.type"] = record.error
    for name, value in (record.key_metadata or {}).items():
        attributes[f"llmgate.virtual_key.metadata.{name}"] = value
    current.set_attributes(attributes)
    if record.status >= 500 or record.status_class == "5xx":
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, record.error))
