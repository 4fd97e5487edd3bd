"""`POST /v1/messages/count_tokens` with the official anthropic SDK (`messages.count_tokens`)
against every provider: exact from Anthropic's own endpoint at an anthropic target, an
upper-bound estimate elsewhere (said in `x-llmgate-token-count`), errors in Anthropic's
envelope, and no budget reserved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import orjson
from llmgate_sidecar.api.count_tokens import PER_IMAGE, WITH_TOOLS, estimate_tokens

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.inbound.anthropic_client import HELLO, TOOLS, anthropic_client
from tests.sidecar.inbound.upstreams import Upstream, served

__all__ = ["served"]  # the fixture, parametrized over every provider kind


async def test_count_tokens_on_every_provider(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c:
        raw = await c.messages.with_raw_response.count_tokens(
            model="chat", system="Be brief.", messages=HELLO, tools=TOOLS)
    count = await raw.parse()
    if case.kind == "anthropic":
        assert raw.headers["x-llmgate-token-count"] == "exact"
        assert count.input_tokens == 14  # what Anthropic's endpoint said
    else:
        assert raw.headers["x-llmgate-token-count"] == "estimate"
        body = {"system": "Be brief.", "messages": HELLO, "tools": TOOLS}
        assert count.input_tokens == estimate_tokens(body)
        # At least one token per byte of every text, and the tool system prompt.
        assert count.input_tokens >= len("Be brief.Say hello") + WITH_TOOLS
    assert raw.headers["x-llmgate-route"] == "chat"


async def test_anthropic_gets_the_request_for_the_targets_model(tmp_path: Path) -> None:
    upstream = await fake_anthropic().start()
    gw = await start_gateway(tmp_path, [
        provider("claude", "anthropic", baseURL=upstream.url,
                 apiKey={"secretKeyRef": {"name": "cred", "key": "api-key"}}),
        route("chat", [{"provider": "claude", "model": "claude-sonnet-4-5"}]),
        virtual_key("team", secretName="team-key", models=["chat"],
                    budget={"limit": "0.000001", "period": "1d"})], {"cred": {"api-key": "k"}})
    try:
        async with anthropic_client(gw) as c:
            count = await c.messages.count_tokens(model="chat", messages=HELLO, tools=TOOLS)
            assert count.input_tokens == 14  # a budget too small for any message: counting is free
            try:
                await c.messages.count_tokens(model="nope", messages=HELLO)
            except anthropic.NotFoundError as exc:
                body: Any = exc.body
                assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
            else:
                raise AssertionError("an unknown model was counted")
            try:
                await c.messages.count_tokens(model="chat", messages=[])
            except anthropic.BadRequestError as exc:
                assert exc.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
            else:
                raise AssertionError("empty messages were counted")
        sent = upstream.requests[-1]
        assert sent.path == "/v1/messages/count_tokens"
        assert sent.headers["x-api-key"] == "k"
        assert orjson.loads(orjson.dumps(sent.body)) == {
            "model": "claude-sonnet-4-5", "messages": HELLO, "tools": TOOLS}
    finally:
        await gw.close()
        await upstream.close()


def test_the_estimate_counts_images_tools_and_every_byte() -> None:
    text = {"messages": [{"role": "user", "content": "héllo wörld"}]}
    image = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "héllo wörld"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo" * 1000}}]}]}
    assert estimate_tokens(text) >= len("héllo wörld".encode())
    assert estimate_tokens(image) == estimate_tokens(text) + PER_IMAGE
    call = {"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"city": "Paris"}}]}]}
    assert estimate_tokens(call) >= len(b'{"city":"Paris"}')
