"""Pass-through of other OpenAI paths (`/v1/responses`, `/v1/completions`, images, audio,
moderations) to the OpenAI-family (and, where the path exists, Azure) targets of the route
named by the request's `model` (JSON field, or the multipart form field).

Auth, the model allow-list, limits and metrics apply as for chat; the body is forwarded as
it came with only `model` replaced by the target's, and the answer (JSON, binary audio, or
SSE event by event) is relayed as the upstream wrote it. Targets whose adapter cannot take
the path are skipped; none left is a 400 `passthrough_not_supported`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Group, Target

from llmgate_sidecar.api.inbound import parse_json_object
from llmgate_sidecar.api.pipeline import current_runtime, front
from llmgate_sidecar.api.replies import SSE_HEADERS, record_usage, response_headers
from llmgate_sidecar.api.state import ACCOUNTANT, METRICS, REQUEST_ID, ROUTER
from llmgate_sidecar.config.runtime import Runtime, Upstream
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.observability.observe import observed
from llmgate_sidecar.observability.record import RequestRecord
from llmgate_sidecar.policy.accounting import leaves, reservation
from llmgate_sidecar.routing.router import Served
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.upstream.transport import UpstreamResponse
from llmgate_sidecar.wire.sse import Event

OPERATIONS = ("responses", "completions", "images/generations", "audio/speech",
              "audio/transcriptions", "audio/translations", "moderations")
_MODEL_PART = re.compile(rb'content-disposition:[^\r\n]*\bname="model"', re.IGNORECASE)


def supports(upstream: Upstream, operation: str) -> bool:
    return operation in getattr(upstream.adapter, "RAW_OPERATIONS", ())


class Body:
    """The inbound body and how to put another model into it without touching the rest."""

    def __init__(self, raw: bytes, content_type: str, boundary: str | None) -> None:
        self.raw, self.content_type, self._boundary = raw, content_type, boundary
        self.json: dict[str, Any] = {}
        if boundary is None:
            self.json = parse_json_object(raw)
            model = self.json.get("model")
        else:
            model = self._part_value()
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a string", param="model",
                             code="invalid_type")
        self.model: str = model

    def _parts(self) -> list[bytes]:
        assert self._boundary is not None
        return self.raw.split(b"--" + self._boundary.encode())

    def _part_value(self) -> str | None:
        for part in self._parts():
            head, sep, value = part.partition(b"\r\n\r\n")
            if sep and _MODEL_PART.search(head):
                return value.removesuffix(b"\r\n").decode()
        return None

    def with_model(self, model: str) -> bytes:
        if self._boundary is None:
            return orjson.dumps({**self.json, "model": model})
        parts = []
        for part in self._parts():
            head, sep, _ = part.partition(b"\r\n\r\n")
            if sep and _MODEL_PART.search(head):
                part = head + sep + model.encode() + b"\r\n"
            parts.append(part)
        return (b"--" + self._boundary.encode()).join(parts)


def require_targets(runtime: Runtime, group: Group, operation: str) -> None:
    names = []
    for target in leaves(group):
        upstream = runtime.upstreams.get(target.provider)
        if upstream is not None and supports(upstream, operation):
            return
        names.append(f"{target.provider} ({upstream.provider.kind if upstream else 'unknown'})")
    raise BadRequest(f"/v1/{operation} is passed through to OpenAI-family targets only; this "
                     f"route has none that serves it: {', '.join(sorted(names))}",
                     param="model", code="passthrough_not_supported")


def usage_in(data: Any) -> Usage | None:
    """Usage from a JSON answer or stream event (Responses API or legacy completions)."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict) and isinstance(data.get("response"), dict):
        usage = data["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("input_tokens", usage.get("prompt_tokens"))
    output = usage.get("output_tokens", usage.get("completion_tokens")) or 0
    if not isinstance(prompt, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=int(output), known=True)


async def relay(request: web.Request, served: Served,
                headers: dict[str, str]) -> tuple[web.StreamResponse, Usage | None, str]:
    """Write the upstream answer back: JSON whole (its usage is read), SSE event by event,
    anything else (audio, images as bytes) chunk by chunk as it arrives."""
    response = served.response
    assert response is not None
    content_type = response.headers.get("Content-Type", "application/octet-stream")
    if "json" in content_type:
        payload = await response.read()
        out = web.Response(body=payload, headers={**headers, "Content-Type": content_type})
        return out, usage_in(_json_or_none(payload)), "2xx"
    if not content_type.startswith("text/event-stream"):
        return await _relay_bytes(request, response, content_type, headers)
    stream = web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS})
    await stream.prepare(request)
    usage: Usage | None = None
    try:
        async for event in response.events():
            usage = usage_in(_json_or_none(event.data.encode())) or usage
            await stream.write(_encode(event))
    except UpstreamError as exc:
        await stream.write(_encode(Event(orjson.dumps({"type": "error", "error": {
            "type": "upstream_error", "code": exc.error_class,
            "message": f"upstream failed mid-stream: {exc.message}"}}).decode(), "error")))
        await stream.write_eof()
        return stream, usage, "5xx"
    await stream.write_eof()
    return stream, usage, "2xx"


async def _relay_bytes(request: web.Request, response: UpstreamResponse, content_type: str,
                       headers: dict[str, str]) -> tuple[web.StreamResponse, None, str]:
    out = web.StreamResponse(status=200, headers={**headers, "Content-Type": content_type})
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        out.content_length = int(length)
    await out.prepare(request)
    try:
        async for chunk in response.chunks():
            await out.write(chunk)
    except UpstreamError:
        # Committed binary body: the only honest signal left is an incomplete response.
        assert request.transport is not None
        request.transport.close()
        return out, None, "5xx"
    await out.write_eof()
    return out, None, "2xx"


def _encode(event: Event) -> bytes:
    head = b"" if event.event == "message" else b"event: " + event.event.encode() + b"\n"
    lines = b"".join(b"data: " + line.encode() + b"\n" for line in event.data.split("\n"))
    return head + lines + b"\n"


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


async def passthrough(request: web.Request) -> web.StreamResponse:
    app = request.app
    metrics, accountant, router = app[METRICS], app[ACCOUNTANT], app[ROUTER]
    operation = request.path.removeprefix("/v1/")
    with observed(metrics, RequestRecord(request[REQUEST_ID]), request.headers) as record:
        runtime = current_runtime(request)
        content_type = request.headers.get("Content-Type", "application/json")
        boundary = _boundary(content_type) if request.content_type.startswith(
            "multipart/") else None
        body = Body(await request.read(), content_type, boundary)
        record.stream = body.json.get("stream") is True
        f = front(request, record, body.model, runtime=runtime)
        require_targets(runtime, f.group, operation)
        planned = reservation(runtime, f.route, f.group, body.json)
        ticket = await accountant.admit(runtime, f.policy, planned, metrics)
        metrics.in_flight.inc()
        served, usage = None, None
        try:
            async def attempt(upstream: Upstream, target: Target,
                              deadline: float | None) -> Served:
                adapter: Any = upstream.adapter  # `supports` checked it has raw_request
                response, _, seconds = await router.exchange(
                    upstream, target, f.route, deadline, lambda: adapter.raw_request(
                        operation, body.with_model(target.model), body.content_type, target),
                    keep_open=True)
                return Served(target, upstream, 0, seconds, response=response)
            served = await router.call(runtime, f.route, f.group, attempt,
                                       usable=lambda u: supports(u, operation))
            record.served(served)
            out, usage, status_class = await relay(
                request, served, response_headers(request, f.route, served, ticket))
            record_usage(metrics, f.route, served, f.policy, usage)
            record.answered(status_class, usage, time.perf_counter() - record.started
                            - served.upstream_seconds)
            return out
        finally:
            metrics.in_flight.dec()
            if served is not None and served.response is not None:
                served.response.release()
            record.cost_usd = accountant.settle_later(
                ticket, planned, runtime, served.target if served else None, usage,
                metrics=metrics, route=f.route.name, policy=f.policy)


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    return match.group(1) if match else None
