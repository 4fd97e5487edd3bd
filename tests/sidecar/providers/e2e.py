"""Start the real sidecar in front of one fake provider, for end-to-end adapter tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

PROVIDER_KEY = "upstream-secret-key"


async def gateway_for(tmp_path: Path, kind: str, model: str, *, api_key: bool = True,
                      secrets: dict[str, dict[str, str]] | None = None,
                      route_spec: dict[str, Any] | None = None, **spec: Any) -> Gateway:
    """A gateway serving route `chat` -> provider `up` (of `kind`) -> upstream `model`."""
    if api_key:
        spec["apiKey"] = {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}
    resources = [provider("up", kind, **spec),
                 route("chat", [{"provider": "up", "model": model}], **(route_spec or {})),
                 virtual_key("team", secretName="team-key")]
    return await start_gateway(tmp_path, resources,
                               {"up-cred": {"api-key": PROVIDER_KEY}, **(secrets or {})})


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=10)


MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


async def failed_request(gw: Gateway, upstream: ReplayUpstream, reply: Reply, status: int,
                         code: str, param: str | None = None) -> openai.APIStatusError:
    """Script `reply`, send one chat request, and check what the client sees: the gateway's
    status, the OpenAI error code and param apps branch on, llmgate's own reason beside
    them, and never the provider's key. Returns the error for more checks."""
    upstream.script.append(reply)
    async with client(gw) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == status
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.body["llmgate"]["provider"] == "up"  # type: ignore[index]
    assert PROVIDER_KEY not in str(info.value.body)
    return info.value


async def text_before_in_band_error(gw: Gateway, upstream: ReplayUpstream,
                                    reply: Reply) -> str:
    """Script `reply`, stream a chat request, check the stream ends with the in-band
    upstream error (never a clean end), and return the text received before it."""
    upstream.script.append(reply)
    received = []
    async with client(gw) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="upstream failed mid-stream"):
            async for chunk in stream:
                received.append(chunk)
    return "".join(ch.choices[0].delta.content or "" for ch in received if ch.choices)
