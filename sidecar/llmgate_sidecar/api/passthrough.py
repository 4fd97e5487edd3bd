"""Pass-through of other OpenAI paths (`/v1/responses`, `/v1/completions`, images, audio,
moderations) to the OpenAI-family (and, where the path exists, Azure) targets of the route
named by the request's `model` (JSON field, or the multipart form field).

One `PassthroughEndpoint` per path, served by the one request lifecycle (`api.lifecycle`):
auth, the model allow-list, limits, booking and metrics as for chat. The body is forwarded as
it came with only `model` replaced by the target's, and the answer (JSON, binary audio, or
SSE event by event) is relayed as the upstream wrote it, within the route's deadline. Targets
whose adapter cannot take the path are skipped; none left is a 400
`passthrough_not_supported`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Target
from llmgate_contract.providers import PASSTHROUGH_OPERATIONS

from llmgate_sidecar.api.inbound import check_counts, parse_json_object
from llmgate_sidecar.api.lifecycle import Endpoint, Exchange
from llmgate_sidecar.api.replies import SSE_HEADERS, Outcome, response_headers
from llmgate_sidecar.api.state import ROUTER
from llmgate_sidecar.config.runtime import Upstream
from llmgate_sidecar.errors import BadRequest, UpstreamError, UpstreamFailed
from llmgate_sidecar.policy.accounting import Reservation, reservation
from llmgate_sidecar.routing.router import Attempt, Served
from llmgate_sidecar.upstream.providers.base import Usage, checked
from llmgate_sidecar.wire.sse import Event

OPERATIONS = PASSTHROUGH_OPERATIONS  # the contract's list (llmgate_contract.providers)
_MODEL_PART = re.compile(rb'content-disposition:[^\r\n]*\bname="model"', re.IGNORECASE)


def supports(upstream: Upstream, operation: str) -> bool:
    side = upstream.adapter.passthrough
    return side is not None and operation in side.operations


class Body:
    """The inbound body and how to put another model into it without touching the rest."""

    def __init__(self, raw: bytes, content_type: str, boundary: str | None) -> None:
        self.raw, self.content_type, self._boundary = raw, content_type, boundary
        self.json: dict[str, Any] = {}
        if boundary is None:
            self.json = parse_json_object(raw)
            check_counts(self.json)
            model = self.json.get("model")
        else:
            model = self._part_value()
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a string", param="model",
                             code="invalid_type")
        self.model: str = model
        self.stream = self.json.get("stream") is True
        self.include_usage = False

    @property
    def body(self) -> dict[str, Any]:
        return self.json

    def _parts(self) -> list[bytes]:
        assert self._boundary is not None
        return self.raw.split(b"--" + self._boundary.encode())

    def _part_value(self) -> str | None:
        for part in self._parts():
            head, sep, value = part.partition(b"\r\n\r\n")
            if sep and _MODEL_PART.search(head):
                try:
                    return value.removesuffix(b"\r\n").decode()
                except UnicodeDecodeError:
                    raise BadRequest("the multipart field 'model' is not valid UTF-8",
                                     param="model", code="invalid_value") from None
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
    return checked(Usage(prompt_tokens=prompt, completion_tokens=int(output), known=True))


async def relay(request: web.Request, served: Served, headers: dict[str, str],
                outcome: Outcome, deadline_at: float | None) -> web.StreamResponse:
    """Write the upstream answer back: JSON whole (its usage is read), SSE event by event,
    anything else (audio, images as bytes) chunk by chunk as it arrives. The route's
    deadline bounds the whole answer, as it bounds a chat stream: past it a JSON answer is a
    504, a committed one ends as an upstream timeout."""
    response = served.response
    assert response is not None
    content_type = response.headers.get("Content-Type", "application/octet-stream")
    if "json" in content_type:
        try:
            async with asyncio.timeout_at(deadline_at):
                payload = await response.read()
        except TimeoutError:
            raise UpstreamFailed(_past_deadline(served), served.attempts) from None
        try:
            outcome.usage = usage_in(_json_or_none(payload))
        except UpstreamError as exc:
            raise UpstreamFailed(exc, served.attempts) from None
        return web.Response(body=payload, headers={**headers, "Content-Type": content_type})
    if not content_type.startswith("text/event-stream"):
        return await _relay_bytes(request, served, content_type, headers, outcome, deadline_at)
    stream = web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS})
    await stream.prepare(request)
    try:
        try:
            async with asyncio.timeout_at(deadline_at):
                async for event in response.events():
                    outcome.usage = usage_in(_json_or_none(event.data.encode())) or \
                        outcome.usage
                    if event.data == "[DONE]" or event.event == "response.completed":
                        await outcome.end()
                    await stream.write(_encode(event))
        except TimeoutError:
            raise _past_deadline(served) from None
    except UpstreamError as exc:
        await stream.write(_encode(Event(orjson.dumps({"type": "error", "error": {
            "type": "upstream_error", "code": exc.error_class,
            "message": f"upstream failed mid-stream: {exc.message}"}}).decode(), "error")))
        await stream.write_eof()
        outcome.status_class = "5xx"
        return stream
    await outcome.end()
    await stream.write_eof()
    return stream


async def _relay_bytes(request: web.Request, served: Served, content_type: str,
                       headers: dict[str, str], outcome: Outcome,
                       deadline_at: float | None) -> web.StreamResponse:
    response = served.response
    assert response is not None
    out = web.StreamResponse(status=200, headers={**headers, "Content-Type": content_type})
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        out.content_length = int(length)
    await out.prepare(request)
    try:
        async with asyncio.timeout_at(deadline_at):
            async for chunk in response.chunks():
                await out.write(chunk)
    except (UpstreamError, TimeoutError):
        # Committed binary body: the only honest signal left is an incomplete response.
        assert request.transport is not None
        request.transport.close()
        outcome.status_class = "5xx"
        return out
    await out.write_eof()
    return out


def _past_deadline(served: Served) -> UpstreamError:
    target = served.target
    return UpstreamError("timeout", f"{target.provider}: the route's deadline passed before "
                         "the answer was complete", provider=target.provider, model=target.model)


def _encode(event: Event) -> bytes:
    head = b"" if event.event == "message" else b"event: " + event.event.encode() + b"\n"
    lines = b"".join(b"data: " + line.encode() + b"\n" for line in event.data.split("\n"))
    return head + lines + b"\n"


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


class PassthroughEndpoint(Endpoint[Body]):
    """`POST /v1/<operation>` relayed to targets whose adapter takes the path."""

    def __init__(self, operation: str) -> None:
        self.operation, self.path = operation, f"/v1/{operation}"

    def parse(self, request: web.Request, raw: bytes) -> Body:
        content_type = request.headers.get("Content-Type", "application/json")
        boundary = _boundary(content_type) if request.content_type.startswith(
            "multipart/") else None
        return Body(raw, content_type, boundary)

    def usable(self, upstream: Upstream) -> bool:
        return supports(upstream, self.operation)

    def unsupported(self, names: list[str]) -> BadRequest:
        return BadRequest(f"{self.path} is passed through to OpenAI-family targets only; "
                          f"this route has none that serves it: {', '.join(names)}",
                          param="model", code="passthrough_not_supported")

    def reserve(self, exchange: Exchange[Body]) -> Reservation:
        f = exchange.front
        # The body goes upstream as it came: a target's params do not cap its output.
        return reservation(f.runtime, f.route, f.group, exchange.body, ceilings=False)

    def attempt(self, exchange: Exchange[Body]) -> Attempt:
        router, route, operation = exchange.request.app[ROUTER], exchange.route, self.operation
        body = exchange.call

        async def attempt(upstream: Upstream, target: Target, deadline: float | None) -> Served:
            adapter = upstream.adapter.passthrough
            assert adapter is not None  # `usable` skipped the others
            response, _, seconds = await router.exchange(
                upstream, target, route, deadline, lambda: adapter.raw_request(
                    operation, body.with_model(target.model), body.content_type, target),
                keep_open=True)
            return Served(target, upstream, 0, seconds, response=response)
        return attempt

    async def reply(self, exchange: Exchange[Body], served: Served) -> web.StreamResponse:
        exchange.outcome.overhead = exchange.overhead(served)
        headers = response_headers(exchange.request, exchange.route, served, exchange.ticket)
        return await relay(exchange.request, served, headers, exchange.outcome,
                           exchange.deadline_at)


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    return match.group(1) if match else None
