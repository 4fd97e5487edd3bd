"""The model list (`GET /v1/models`, `GET /v1/models/{model}`): what the caller may use.

Every model-addressed `POST` endpoint (chat, Messages, embeddings, pass-through) is served by
the one request lifecycle instead (`api.lifecycle`, specs in `api.endpoints`). Errors are
raised as `GatewayError`s for the app's middleware; handlers never build error bodies.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llmgate_sidecar.api.lifecycle import caller, current_runtime
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.errors import NotFound
from llmgate_sidecar.policy.auth import allows


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
