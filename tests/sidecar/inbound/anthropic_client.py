"""The official `anthropic` SDK pointed at a gateway, and raw-event helpers for its streams."""

from __future__ import annotations

from typing import Any

import anthropic

from tests.sidecar.harness import KEY, Gateway

TOOLS: list[Any] = [{"name": "get_weather", "description": "Current weather for a city",
                     "input_schema": {"type": "object",
                                      "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}]
HELLO: list[Any] = [{"role": "user", "content": "Say hello"}]


def anthropic_client(gw: Gateway, api_key: str = KEY) -> anthropic.AsyncAnthropic:
    # base_url without /v1: the SDK appends /v1/messages itself, as against api.anthropic.com.
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=api_key, max_retries=0,
                                    timeout=10)


async def raw_events(c: anthropic.AsyncAnthropic, **params: Any) -> list[Any]:
    stream = await c.messages.create(stream=True, **params)
    return [event async for event in stream]
