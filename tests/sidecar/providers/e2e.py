"""Start the real sidecar in front of one fake provider, for end-to-end adapter tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai

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
