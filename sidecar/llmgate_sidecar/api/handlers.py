"""Request handlers of the inbound API: one small function per endpoint.

`/v1/chat/completions` and `/v1/messages` both run `pipeline.serve_chat` (one code path for
auth, guardrails, cache, limits, routing, metrics), differing only in how the request is
parsed and in the `Dialect` the answer leaves in. `/v1/embeddings` and the OpenAI
pass-through paths have their own modules. Errors are raised as `GatewayError`s for the
app's middleware; handlers never build error bodies themselves.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llmgate_sidecar.api.anthropic_inbound import parse_messages
from llmgate_sidecar.api.dialects import OPENAI
from llmgate_sidecar.api.inbound import parse_chat
from llmgate_sidecar.api.messages_api import ANTHROPIC
from llmgate_sidecar.api.pipeline import caller, current_runtime, serve_chat
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.errors import NotFound
from llmgate_sidecar.policy.auth import allows


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve_chat(request, parse_chat, OPENAI)


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic Messages API in, any provider out (`anthropic-version` is ignored)."""
    return await serve_chat(request, parse_messages, ANTHROPIC)


def _model_entry(name: str, runtime: Runtime) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(runtime.loaded_at.timestamp()),
            "owned_by": f"llmgate/{runtime.namespace}"}


async def list_models(request: web.Request) -> web.Response:
    runtime = current_runtime(request)
    policy = caller(request, runtime)
    names = sorted(name for name, route in runtime.routes_by_model.items()
                   if allows(policy, name, route.model))
    return web.json_response({"object": "list",
                              "data": [_model_entry(n, runtime) for n in names]},
                             dumps=lambda v: orjson.dumps(v).decode())


async def get_model(request: web.Request) -> web.Response:
    runtime = current_runtime(request)
    policy = caller(request, runtime)
    name = request.match_info["model"]
    route = runtime.routes_by_model.get(name)
    if route is None or not allows(policy, name, route.model):
        raise NotFound(f"the model {name!r} does not exist or is not served here")
    return web.json_response(_model_entry(name, runtime))
