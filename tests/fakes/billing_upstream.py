"""A fake OpenAI upstream that keeps the provider's books: every call it served is billed.

Serves `/v1/chat/completions` (JSON and SSE), `/v1/embeddings` and `/v1/completions` on
loopback. How each call goes is read from the request itself, so concurrent calls through
several gateways cannot mix up a script: the last word of the prompt (or input) is the
behaviour, `user` names who pays:

- `ok`: answers at once with its usage;
- `slow`: answers after `SLOW` seconds (longer than the test route's deadline);
- `fail`: a 500 at once (providers do not bill an error status);
- `trickle`: a stream (or body) that starts, then stalls for `SLOW` seconds.

Billing is the provider's worst habit: a call that reached the handler and was not refused
with an error status is billed in full at arrival (prompt tokens and every completion token
it will generate), even if the caller hangs up or times out before the answer. Usage is
always within what the request allows (`max_tokens` x `n`, or 16 tokens per choice when
unset) and prompt tokens never exceed the UTF-8 bytes of the text, as with a byte-level
BPE tokenizer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import serve_on_loopback

SLOW = 1.0
UNSET_OUTPUT = 16


def _text(body: dict[str, Any]) -> str:
    if isinstance(body.get("messages"), list):
        return " ".join(str(m.get("content", "")) for m in body["messages"]
                        if isinstance(m, dict))
    for field in ("input", "prompt"):
        value = body.get(field)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return " ".join(str(v) for v in value)
    return ""


class BillingUpstream:
    def __init__(self) -> None:
        self.billed: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        self.calls = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> BillingUpstream:
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
            app.router.add_post(path, self._serve)
        self._runner, port = await serve_on_loopback(app, shutdown_timeout=0.5,
                                                     handler_cancellation=True)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.billed.clear()
        self.calls = 0

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = _text(body)
        mode = text.split()[-1] if text.split() else "ok"
        if mode == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}},
                                     status=500)
        embeddings = request.path.endswith("/embeddings")
        prompt = max(1, len(text.encode()) // 2)
        choices = int(body.get("n") or 1)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = 0 if embeddings else choices * min(int(limit or UNSET_OUTPUT),
                                                        UNSET_OUTPUT)
        payer = str(body.get("user", ""))
        self.calls += 1
        before = self.billed[payer]
        self.billed[payer] = (before[0] + prompt, before[1] + completion)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        if mode == "slow":
            await asyncio.sleep(SLOW)
        if embeddings:
            return web.json_response({"object": "list", "model": body["model"], "usage": usage,
                                      "data": [{"object": "embedding", "index": 0,
                                                "embedding": [0.1, 0.2]}]})
        chat = request.path.endswith("/chat/completions")
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            if mode == "trickle":
                await asyncio.sleep(SLOW)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": "ok"}
            else:
                choice["text"] = "ok"
            return web.json_response({"id": "x", "object": kind, "model": body["model"],
                                      "created": 0, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta: dict[str, Any] = {"content": "ok"} if chat else {}
        first = {"id": "x", "object": kind + (".chunk" if chat else ""), "created": 0,
                 "model": body["model"],
                 "choices": [{"index": 0, **({"delta": delta} if chat else {"text": "ok"}),
                              "finish_reason": None}]}
        await response.write(b"data: " + orjson.dumps(first) + b"\n\n")
        if mode == "trickle":
            await asyncio.sleep(SLOW)
        last = {**first, "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response
