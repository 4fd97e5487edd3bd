"""The sidecar's logs and traces: one JSON line per request, never a key, secret or prompt.

Every error path a client or an upstream can cause runs against the real app with a
provider key in its credentials; the JSON output (and the raw log records behind it) must
hold neither that key, nor the caller's virtual key, nor the prompt. Traces are checked with
the OpenTelemetry SDK's in-memory exporter; unconfigured tracing must stay a no-op.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from llmgate_sidecar.observability import logs, tracing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.redis_server import free_port

PROVIDER_KEY = "prov-secret-value-XYZ987"  # deliberately not shaped like sk-/lg- keys
PROMPT = "PROMPT-CANARY-7731 please summarise my medical record"
LIMITED_KEY = "lg-limited-key-0123456789"
MESSAGES = [{"role": "user", "content": PROMPT}]
TEAM_METADATA = {"team": "payments", "cost-center": "cc-4711"}  # VirtualKey spec.metadata
FIELDS = {"request_id", "route", "provider", "model", "virtual_key", "key_metadata", "status",
          "status_class", "stream", "attempts", "fallbacks", "input_tokens",
          "output_tokens", "cost_usd", "overhead_ms", "latency_ms", "error"}


class Capture(logging.Handler):
    """Formats every record as production does and keeps the raw record too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.stream = io.StringIO()
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(repr(vars(record)) + record.getMessage())
        self.stream.write(self.format(record) + "\n")

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == logs.REQUEST_LOGGER]

    def assert_clean(self) -> None:
        for text in [self.stream.getvalue(), *self.raw]:
            for secret in (KEY, LIMITED_KEY, PROVIDER_KEY, "PROMPT-CANARY"):
                assert secret not in text


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler, root = Capture(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # debug lines too: they must be as clean
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


def resources(url: str) -> list[dict[str, Any]]:
    cred = {"apiKey": {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}}
    pricing = {"up-1": {"inputPerMillion": "1000", "outputPerMillion": "2000"}}
    return [provider("primary", baseURL=url, pricing=pricing, **cred),
            route("chat", [{"provider": "primary", "model": "up-1"}]),
            route("private", [{"provider": "primary", "model": "up-1"}]),
            virtual_key("team", secretName="team-key", models=["chat"],
                        metadata=TEAM_METADATA),
            virtual_key("limited", secretName="limited-key",
                        limits={"requestsPerMinute": 1}, metadata={"team": "research"},
                        budget={"limit": "10.00", "period": "1d"})]


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, resources(upstream.url),
                             {"up-cred": {"api-key": PROVIDER_KEY},
                              "limited-key": {"api-key": LIMITED_KEY}},
                             redis_url=f"redis://127.0.0.1:{free_port()}/0")
    yield gw
    await gw.close()


async def post(gw: Gateway, body: Any, key: str = KEY, **headers: str) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as session, session.post(
            gw.base_url + "/chat/completions", data=data,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     **headers}) as r:
        await r.read()
        return r.status, r.headers["x-request-id"]


async def test_success_writes_one_line_with_every_field(gateway: Gateway,
                                                        captured: Capture) -> None:
    status, request_id = await post(gateway, {"model": "chat", "messages": MESSAGES},
                                    **{"x-request-id": "req-42"})
    assert (status, request_id) == (200, "req-42")
    [line] = captured.requests()
    assert FIELDS <= set(line)
    assert line["level"] == "info" and line["message"] == "request"
    assert (line["request_id"], line["route"], line["provider"], line["model"]) == (
        "req-42", "chat", "primary", "up-1")
    assert (line["status"], line["attempts"], line["virtual_key"]) == (200, 1, "team")
    assert (line["input_tokens"], line["output_tokens"]) == (6, 5)
    # The spend is attributed to the key and to its labels on the same line.
    assert line["cost_usd"] == pytest.approx(6 * 0.001 + 5 * 0.002)
    assert line["key_metadata"] == TEAM_METADATA
    assert 0 <= line["overhead_ms"] <= line["latency_ms"]
    captured.assert_clean()


ERROR_PATHS: list[tuple[str, Any, dict[str, Any]]] = [
    ("bad json", b"{not json " + PROMPT.encode(), {"status": 400, "error": "invalid_json"}),
    ("unknown key", {"model": "chat", "messages": MESSAGES},
     {"status": 401, "key": "lg-" + PROVIDER_KEY, "virtual_key": "unknown",
      "key_metadata": {}}),
    ("unknown model", {"model": PROMPT, "messages": MESSAGES},
     {"status": 404, "route": "unknown", "error": "model_not_found"}),
    ("model not allowed", {"model": "private", "messages": MESSAGES},
     {"status": 403, "error": "model_not_allowed", "key_metadata": TEAM_METADATA}),
    ("upstream echoes its key", {"model": "chat", "messages": MESSAGES},
     {"status": 502, "upstream": Behaviour(kind="status", status=401, body={"error": {
         "message": f"Incorrect API key provided: {PROVIDER_KEY}", "type": "auth"}})}),
    ("upstream 500", {"model": "chat", "messages": MESSAGES},
     {"status": 502, "upstream": Behaviour(kind="status", status=500)}),
    ("upstream reset", {"model": "chat", "messages": MESSAGES},
     {"status": 503, "upstream": Behaviour(kind="reset")}),
    ("malformed upstream", {"model": "chat", "messages": MESSAGES},
     {"status": 502, "upstream": Behaviour(kind="malformed")}),
    ("stream cut", {"model": "chat", "messages": MESSAGES, "stream": True},
     {"status": 200, "status_class": "5xx", "upstream": Behaviour(kind="cut")}),
    ("error event in stream", {"model": "chat", "messages": MESSAGES, "stream": True},
     {"status": 200, "status_class": "5xx", "upstream": Behaviour(kind="error_event")}),
]


@pytest.mark.parametrize("name, body, expect", ERROR_PATHS, ids=[p[0] for p in ERROR_PATHS])
async def test_error_paths_log_one_clean_line(gateway: Gateway, upstream: FakeOpenAI,
                                              captured: Capture, name: str, body: Any,
                                              expect: dict[str, Any]) -> None:
    if "upstream" in expect:
        upstream.script.append(expect["upstream"])
    status, request_id = await post(gateway, body, expect.get("key", KEY))
    assert status == expect["status"]
    [line] = captured.requests()
    assert line["request_id"] == request_id
    assert line["status_class"] == expect.get("status_class", f"{status // 100}xx")
    for field in ("route", "virtual_key", "key_metadata", "error"):
        if field in expect:
            assert line[field] == expect[field]
    if line["status_class"] == "5xx":
        assert line["level"] == "warning" and line["error"]
    captured.assert_clean()


async def test_rate_limit_budget_and_redis_outage_logs_are_clean(
        gateway: Gateway, captured: Capture) -> None:
    ok, _ = await post(gateway, {"model": "chat", "messages": MESSAGES, "max_tokens": 2},
                       LIMITED_KEY)
    limited, _ = await post(gateway, {"model": "chat", "messages": MESSAGES}, LIMITED_KEY)
    assert (ok, limited) == (200, 429)
    lines = captured.requests()
    assert [line["status"] for line in lines] == [200, 429]
    assert lines[1]["error"] == "rate_limit_exceeded"
    assert [line["key_metadata"] for line in lines] == [{"team": "research"}] * 2
    # The Redis outage (nothing listens on the URL) was logged too, without secrets.
    assert any(line["logger"] == "llmgate.store" for line in captured.lines())
    captured.assert_clean()


def test_formatter_masks_key_shaped_values_as_a_second_line_of_defence() -> None:
    record = logging.LogRecord("llmgate.x", logging.INFO, __file__, 1,
                               "auth header Bearer abcdefghijkl, key %s", (KEY,), None)
    record.upstream = "sk-ant-api03-abcdefghijklmnop"
    line = logs.JsonFormatter().format(record)
    assert KEY not in line and "sk-ant-api03" not in line and "abcdefghijkl" not in line
    assert line.count("[REDACTED]") == 3


def test_log_level_is_configurable() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("warning")
        assert not logging.getLogger(logs.REQUEST_LOGGER).isEnabledFor(logging.INFO)
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


# -- traces ------------------------------------------------------------------------------------

@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider_ = TracerProvider()
    provider_.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.configure(provider_)
    yield exporter
    tracing.reset()
    provider_.shutdown()


async def test_request_and_store_calls_become_spans_of_the_callers_trace(
        gateway: Gateway, spans: InMemorySpanExporter) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, _ = await post(gateway, {"model": "chat", "messages": MESSAGES}, LIMITED_KEY,
                           traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    assert status == 200
    for _ in range(500):  # settlement runs in the background: wait for its last span
        finished = {span.name: span for span in spans.get_finished_spans()}
        if "llmgate.store spend" in finished:
            break
        await asyncio.sleep(0.01)
    request = finished["chat chat"]
    assert format(request.context.trace_id, "032x") == trace_id
    attributes = dict(request.attributes or {})
    assert attributes["gen_ai.provider.name"] == "primary"
    assert attributes["gen_ai.response.model"] == "up-1"
    assert attributes["gen_ai.usage.input_tokens"] == 6
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["llmgate.virtual_key.metadata.team"] == "research"
    assert not any(PROMPT in str(v) or LIMITED_KEY in str(v) for v in attributes.values())
    for operation in ("admit", "settle", "spend"):
        store = finished[f"llmgate.store {operation}"]
        assert store.parent is not None and store.parent.span_id == request.context.span_id
    attempt = finished["chat up-1"]  # the one upstream attempt, a child of the request
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert dict(attempt.attributes or {})["gen_ai.provider.name"] == "primary"


def test_unconfigured_tracing_is_a_shared_no_op(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.reset()
    try:
        assert not tracing.enabled()
        assert tracing.request_span({}) is tracing.span("x", {}) is tracing.attempt_span(
            "p", "m", "r")
        with tracing.request_span({}) as current:
            assert current is None
        # Asked for, but the exporter extra is not installed: said once, tracing stays off.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        tracing.reset()
        with caplog.at_level(logging.WARNING, "llmgate.tracing"):
            assert not tracing.enabled()
        assert "llmgate[tracing]" in caplog.text
    finally:
        tracing.reset()
