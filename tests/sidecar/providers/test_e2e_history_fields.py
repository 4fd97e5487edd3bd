"""History written by one provider, sent on to another: a Gemini turn (thought signatures in
`extra_content` on the message and its tool calls) falls back to OpenAI, Azure OpenAI and an
OpenAI-compatible server.

OpenAI and Azure validate `messages` against OpenAI's schema and answer 400 for a field they
do not know; their fakes here do the same (`schema_error`), so the turn must reach them
without `extra_content` (and without `reasoning_content`), while an OpenAI-compatible
server (possibly Google's own OpenAI endpoint, which needs the signatures) gets it as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azure_upstream import fake_azure
from tests.fakes.gemini_upstream import fake_gemini
from tests.fakes.openai_upstream import FakeOpenAI, schema_error
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.providers.e2e import MESSAGES, TOOLS, client

CRED = {"apiKey": {"secretKeyRef": {"name": "cred", "key": "api-key"}}}
GEMINI = {"provider": "gemini", "model": "gemini-2.5-flash"}


class Rig:
    def __init__(self, gw: Gateway, gemini: ReplayUpstream, openai: FakeOpenAI,
                 azure: ReplayUpstream, compatible: FakeOpenAI) -> None:
        self.gw, self.gemini, self.openai = gw, gemini, openai
        self.azure, self.compatible = azure, compatible

    def sent(self, kind: str) -> list[dict[str, Any]]:
        """The messages the last request to `kind`'s upstream carried."""
        if kind == "azure-openai":
            return list(self.azure.requests[-1].body["messages"])
        upstream = self.openai if kind == "openai" else self.compatible
        return list(upstream.requests[-1]["messages"])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    gemini = await fake_gemini().start()
    openai_up, compatible = FakeOpenAI(), FakeOpenAI()
    openai_up.strict_messages = True
    await openai_up.start()
    await compatible.start()
    azure = await fake_azure(strict_messages=True).start()
    gw = await start_gateway(tmp_path, [
        provider("gemini", "gemini", baseURL=gemini.url + "/v1beta", **CRED),
        provider("oai", "openai", baseURL=openai_up.url, **CRED),
        provider("az", "azure-openai", baseURL=azure.url, **CRED),
        provider("compat", "openai-compatible", baseURL=compatible.url, **CRED),
        route("openai", [GEMINI, {"provider": "oai", "model": "gpt-4o"}]),
        route("azure-openai", [GEMINI, {"provider": "az", "model": "gpt4o-prod"}]),
        route("openai-compatible", [GEMINI, {"provider": "compat", "model": "gemini-2.5"}]),
        virtual_key("team", secretName="team-key")], {"cred": {"api-key": "k"}})
    yield Rig(gw, gemini, openai_up, azure, compatible)
    await gw.close()
    for fake in (gemini, openai_up, azure, compatible):
        await fake.close()


def test_the_fake_refuses_what_openai_refuses() -> None:
    """The fakes' validator answers OpenAI's own 400 for an unknown message field."""
    error = schema_error({"messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "a", "id": "x"}]})
    assert error is not None and error["error"]["message"] == (
        "Additional properties are not allowed ('id' was unexpected) - 'messages.1'")
    call = {"id": "c", "type": "function", "function": {}, "extra_content": {}}
    assert schema_error({"messages": [{"role": "assistant", "tool_calls": [call]}]}) \
        is not None
    assert schema_error({"messages": [{"role": "assistant", "content": "a", "refusal": None,
                                       "tool_calls": [{**call, "extra_content": None}][:0]}]}) \
        is None


@pytest.mark.parametrize("kind", ["openai", "azure-openai", "openai-compatible"])
async def test_a_gemini_turn_falls_back_to_an_openai_family_target(rig: Rig,
                                                                    kind: str) -> None:
    rig.gemini.script.extend([Reply("response_function_call_signed.json"),
                              Reply("response_text_signed.json"),
                              Reply("error_rate_limit.json", status=429)])
    async with client(rig.gw) as c:
        called = await c.chat.completions.create(model=kind, messages=MESSAGES, tools=TOOLS,
                                                 reasoning_effort="low")
        said = await c.chat.completions.create(model=kind, messages=MESSAGES)
        call_turn = called.choices[0].message.model_dump(exclude_none=True)
        text_turn = said.choices[0].message.model_dump(exclude_none=True)
        history: list[Any] = [
            *MESSAGES, call_turn,
            {"role": "tool", "tool_call_id": call_turn["tool_calls"][0]["id"],
             "content": "18C"},
            text_turn, {"role": "user", "content": "Thanks"}]
        raw = await c.chat.completions.with_raw_response.create(model=kind, messages=history,
                                                                tools=TOOLS)
    assert raw.headers["x-llmgate-provider"] != "gemini"
    assert raw.parse().choices[0].message is not None
    # What Gemini signed was in the history the client sent back.
    assert "extra_content" in call_turn["tool_calls"][0] and "extra_content" in text_turn
    assert "reasoning_content" in call_turn
    sent = rig.sent(kind)
    if kind == "openai-compatible":
        assert sent == history  # as the client sent it
        return
    assert [{k for k in m if k not in ("role", "content", "tool_call_id", "tool_calls",
                                       "refusal")} for m in sent] == [set()] * 5
    assert sent[1]["tool_calls"] == [{k: v for k, v in call.items() if k != "extra_content"}
                                     for call in call_turn["tool_calls"]]
    assert sent[3]["content"] == text_turn["content"]
