"""Every inbound dialect (chat completions, Messages, Responses) by every provider kind,
streamed: the official SDK of the dialect gets the whole text, and the raw stream read to its
very end (past the point where an SDK stops listening) holds no in-band error and ends with
the dialect's own end marker.

Why read past the SDK: the OpenAI SDK stops at `data: [DONE]`, so anything the gateway writes
after it is invisible there, while the Anthropic SDK reads until `message_stop`, which comes
last. Cohere ends its streams with `data: [DONE]` after `message-end`; decoding that trailer
once turned finished answers into `stream event is not JSON` for Anthropic-SDK clients only.
"""

from __future__ import annotations

import orjson

from tests.sidecar.harness import Gateway
from tests.sidecar.inbound.anthropic_client import HELLO, anthropic_client
from tests.sidecar.inbound.upstreams import Upstream, served, sse_events
from tests.sidecar.providers.e2e import MESSAGES, client

__all__ = ["served"]  # the fixture, parametrized over every provider kind



async def test_chat_completions_stream(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with client(gw) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) \
        == case.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    events = await sse_events(gw, "/v1/chat/completions",
                        {"model": "chat", "messages": MESSAGES, "stream": True})
    assert events[-1][1] == "[DONE]"
    bodies = [orjson.loads(data) for _, data in events[:-1]]
    assert not [b for b in bodies if "error" in b], bodies
    assert all(b["object"] == "chat.completion.chunk" for b in bodies)


async def test_messages_stream(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c, c.messages.stream(
            model="chat", max_tokens=64, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == case.text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    events = await sse_events(gw, "/v1/messages", {"model": "chat", "max_tokens": 64,
                                             "messages": HELLO, "stream": True})
    names = [name for name, _ in events]
    assert "error" not in names, events
    assert names[0] == "message_start" and names[-1] == "message_stop"


async def test_responses_stream(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with client(gw) as c, c.responses.stream(model="chat", input="Say hello") as stream:
        text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert text == case.text == final.output_text
    assert final.status == "completed" and final.usage is not None
    assert final.usage.output_tokens > 0
    events = await sse_events(gw, "/v1/responses", {"model": "chat", "input": "Say hello",
                                                    "stream": True})
    names = [name for name, _ in events]
    assert "error" not in names, events
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [orjson.loads(data)["sequence_number"] for _, data in events] == \
        list(range(len(events)))
