"""Hypothesis strategies for what clients send and what upstreams answer: JSON of any shape,
bodies close to each endpoint's real shape (one field wrong at a time is the common mistake),
and upstream chat answers and SSE streams from plausible to broken."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", "", "🙂"])
CONTENT = st.one_of(st.text(max_size=200), JSON,
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url",
                                                                             "x"]),
                                                    "text": st.text(max_size=50)}),
                             max_size=3))
def dumps(value: Any) -> bytes:
    """JSON of any value hypothesis makes (orjson refuses integers beyond 64 bits)."""
    return json.dumps(value).encode()


MESSAGE = st.one_of(st.fixed_dictionaries({"role": ROLES, "content": CONTENT}), JSON)
TOKENS = st.one_of(st.integers(-5, 2**64), st.none(), JSON)


def near(base: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy:
    """`base` with some fields replaced by strategy draws, some removed, some extra."""
    def build(changes: dict[str, Any], drop: list[str], extra: dict[str, Any]) -> dict[str, Any]:
        body = {**base, **changes, **extra}
        for name in drop:
            body.pop(name, None)
        return body
    return st.builds(build, st.fixed_dictionaries({}, optional=fields),
                     st.lists(st.sampled_from(sorted(base)), max_size=2),
                     st.dictionaries(st.text(max_size=10), JSON, max_size=2))


def bodies(path: str) -> st.SearchStrategy[bytes]:
    """Raw request bodies for `path`: near-valid JSON most of the time, else anything."""
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    shapes: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": chat,
        "/v1/messages": {**chat, "max_tokens": 16},
        "/v1/responses": {"model": "m", "input": "hi"},
        "/v1/embeddings": {"model": "m", "input": "hi"},
        "/v1/completions": {"model": "m", "prompt": "hi"},
        "/v1/moderations": {"model": "m", "input": "hi"},
        "/v1/images/generations": {"model": "m", "prompt": "a cat"},
        "/v1/audio/speech": {"model": "m", "input": "hi", "voice": "alloy"},
    }
    base = shapes.get(path, chat)
    fields = {"model": st.one_of(st.just("m"), st.text(max_size=20), JSON),
              "messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON),
              "stream": st.one_of(st.booleans(), JSON), "max_tokens": TOKENS,
              "max_completion_tokens": TOKENS, "n": TOKENS, "input": st.one_of(CONTENT, JSON),
              "prompt": st.one_of(CONTENT, JSON), "stream_options": JSON,
              "tools": JSON, "temperature": JSON}
    structured = near(base, fields).map(dumps)
    return st.one_of(structured, structured, JSON.map(dumps), st.binary(max_size=200))


USAGE = st.one_of(st.none(), st.fixed_dictionaries(
    {"prompt_tokens": st.integers(-10, 10**7), "completion_tokens": st.integers(-10, 10**7)}),
    JSON)


def chat_answers() -> st.SearchStrategy[bytes]:
    """Upstream non-streamed chat answers: valid, slightly wrong, or garbage."""
    choice = st.fixed_dictionaries({
        "index": st.integers(0, 2), "finish_reason": st.one_of(st.just("stop"), JSON),
        "message": st.one_of(st.fixed_dictionaries({"role": st.just("assistant"),
                                                    "content": st.one_of(st.text(), JSON)}),
                             JSON)})
    answer = st.fixed_dictionaries({
        "id": st.text(max_size=10), "object": st.just("chat.completion"),
        "model": st.text(max_size=10), "choices": st.one_of(st.lists(choice, max_size=2), JSON),
        "usage": USAGE})
    return st.one_of(answer.map(dumps), JSON.map(dumps), st.binary(max_size=300))


def sse_streams() -> st.SearchStrategy[list[bytes]]:
    """Upstream SSE streams as the chunks written: events of valid and broken chunks."""
    delta = st.fixed_dictionaries({"choices": st.one_of(st.lists(st.fixed_dictionaries({
        "index": st.just(0), "delta": st.one_of(st.fixed_dictionaries(
            {"content": st.text(max_size=20)}), JSON),
        "finish_reason": st.one_of(st.none(), st.just("stop"))}), max_size=1), JSON)},
        optional={"usage": USAGE})
    event = st.one_of(delta.map(lambda d: b"data: " + dumps(d) + b"\n\n"),
                      st.just(b"data: [DONE]\n\n"), st.binary(max_size=60),
                      JSON.map(lambda v: b"data: " + dumps(v) + b"\n\n"))
    return st.lists(event, min_size=0, max_size=6)
