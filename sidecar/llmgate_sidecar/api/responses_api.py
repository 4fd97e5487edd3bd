"""OpenAI Responses answers out: the `Dialect` of `POST /v1/responses` when it is translated.

Turns chat's `chat.completion` into a `response` object (a `message` item with `output_text`
or `refusal`, one `function_call` item per tool call, status, usage), and its
`chat.completion.chunk` stream into the Responses event stream, one chunk at a time:
`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`, `response.function_call_
arguments.delta`, the matching `.done` events, then `response.completed` (or
`response.incomplete` when the output limit cut it) carrying the whole response and usage.
A failure after the first byte is an `error` event and `response.failed`, never a
completion. Errors before it use OpenAI's envelope. Pure translation.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from llmgate_sidecar.api.dialects import ChunkTranslator, StreamTranslator
from llmgate_sidecar.errors import GatewayError
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.wire.sse import encode

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(chat_id: Any) -> str:
    text = str(chat_id or "") or "llmgate"
    return text if text.startswith("resp_") else f"resp_{text}"


def usage_json(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def shell(rid: str, model: str, created: int, status: str) -> dict[str, Any]:
    """The fields every response object carries, with no output yet."""
    return {"id": rid, "object": "response", "created_at": created, "status": status,
            "model": model, "output": [], "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "parallel_tool_calls": True,
            "temperature": None, "top_p": None, "tool_choice": "auto", "tools": [],
            "text": {"format": {"type": "text"}}, "usage": None}


def finished(body: dict[str, Any], finish_reason: Any, usage: Usage | None) -> dict[str, Any]:
    reason = _INCOMPLETE.get(str(finish_reason))
    body["status"] = "incomplete" if reason else "completed"
    body["incomplete_details"] = {"reason": reason} if reason else None
    body["usage"] = usage_json(usage)
    return body


def text_item(item_id: str, text: str, status: str, refusal: str | None = None
              ) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "refusal", "refusal": refusal} if refusal is not None \
        else {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [part]}


def call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def response(payload: bytes) -> bytes:
    data = orjson.loads(payload)
    choice = (data.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    rid = response_id(data.get("id"))
    body = shell(rid, str(data.get("model") or ""), int(data.get("created") or time.time()),
                 "completed")
    calls = reply.get("tool_calls") or []
    if reply.get("refusal"):
        body["output"].append(text_item(f"msg_{rid[5:]}", "", "completed",
                                        str(reply["refusal"])))
    elif reply.get("content") or not calls:
        body["output"].append(text_item(f"msg_{rid[5:]}", str(reply.get("content") or ""),
                                        "completed"))
    for call in calls:
        function = call.get("function") or {}
        body["output"].append(call_item(str(call.get("id", "")), str(function.get("name", "")),
                                        str(function.get("arguments") or ""), "completed"))
    usage = Usage.from_openai(data.get("usage")) if data.get("usage") else None
    return orjson.dumps(finished(body, choice.get("finish_reason"), usage))


class ResponsesStream(ChunkTranslator):
    """One stream's OpenAI chunks -> Responses events. Holds the output items built so far
    (the final `response.completed` carries them all) and the sequence number."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._body: dict[str, Any] | None = None
        self._seq = 0
        self._text: int | None = None  # output index of the open message item
        self._calls: dict[int, int] = {}  # chat tool_calls index -> output index
        self._open: list[int] = []  # function_call items not yet done
        self._finish: Any = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return encode(payload, kind)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._body = shell(response_id(chunk.get("id")), str(chunk.get("model") or self._model),
                           int(chunk.get("created") or time.time()), "in_progress")
        return self._event("response.created", response=self._body) + \
            self._event("response.in_progress", response=self._body)

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self._body is not None else self._start(chunk)
        if chunk.get("usage"):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text_delta(str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _add(self, item: dict[str, Any]) -> tuple[int, bytes]:
        assert self._body is not None
        index = len(self._body["output"])
        self._body["output"].append(item)
        return index, self._event("response.output_item.added", output_index=index,
                                  item={**item, "content": []} if "content" in item else item)

    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self._text is None:
            assert self._body is not None
            item_id = f"msg_{self._body['id'][5:]}_{len(self._body['output'])}"
            self._text, out = self._add(text_item(item_id, "", "in_progress"))
            out += self._event("response.content_part.added", item_id=item_id,
                               output_index=self._text, content_index=0,
                               part={"type": "output_text", "text": "", "annotations": []})
        item = self._item(self._text)
        item["content"][0]["text"] += text
        return out + self._event("response.output_text.delta", item_id=item["id"],
                                 output_index=self._text, content_index=0, delta=text,
                                 logprobs=[])

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        out = b""
        if key not in self._calls:
            out = self._close_text()
            index, added = self._add(call_item(str(call.get("id", "")),
                                               str(function.get("name", "")), "",
                                               "in_progress"))
            self._calls[key] = index
            self._open.append(index)
            out += added
        index = self._calls[key]
        arguments = function.get("arguments")
        if arguments:
            item = self._item(index)
            item["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=index, delta=arguments)
        return out

    def _item(self, index: int) -> dict[str, Any]:
        assert self._body is not None
        item: dict[str, Any] = self._body["output"][index]
        return item

    def _close_text(self) -> bytes:
        if self._text is None:
            return b""
        index, self._text = self._text, None
        item = self._item(index)
        item["status"] = "completed"
        part = item["content"][0]
        return self._event("response.output_text.done", item_id=item["id"],
                           output_index=index, content_index=0, text=part["text"],
                           logprobs=[]) + \
            self._event("response.content_part.done", item_id=item["id"],
                        output_index=index, content_index=0, part=part) + \
            self._event("response.output_item.done", output_index=index, item=item)

    def _close_calls(self) -> bytes:
        out = b""
        for index in self._open:
            item = self._item(index)
            item["status"] = "completed"
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index, name=item["name"],
                               arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._open.clear()
        return out

    def finish(self) -> bytes:
        out = b"" if self._body is not None else self._start({})
        out += self._close_text() + self._close_calls()
        assert self._body is not None
        body = finished(self._body, self._finish, self._usage)
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=body)

    def error(self, error_type: str, code: str, message: str) -> bytes:
        out = self._event("error", code=code, message=message, param=None)
        if self._body is not None:
            self._body.update(status="failed", error={"code": code, "message": message})
            out += self._event("response.failed", response=self._body)
        return out


class ResponsesDialect:
    api = "responses"

    def completion(self, payload: bytes) -> bytes:
        return response(payload)

    def translator(self, model: str) -> StreamTranslator:
        return ResponsesStream(model)

    def envelope(self, exc: GatewayError) -> dict[str, Any]:
        return exc.envelope()


RESPONSES = ResponsesDialect()
