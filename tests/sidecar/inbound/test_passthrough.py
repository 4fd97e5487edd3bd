"""Pass-through of the other OpenAI paths with the official openai SDK: the target's model
and credentials go upstream, everything else (multipart audio, binary speech, Responses SSE)
comes back untouched; non-OpenAI routes are a clear 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from tests.fakes.openai_paths import RESPONSE_EVENTS, SPEECH, FakeOpenAIPaths
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.providers.e2e import PROVIDER_KEY, client

KEY_REF = {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}
AUDIO = b"ID3\x04\x00" + bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAIPaths]:
    fake = await FakeOpenAIPaths().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAIPaths) -> AsyncIterator[Gateway]:
    resources = [provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF),
                 provider("claude", "anthropic", baseURL="http://127.0.0.1:9", apiKey=KEY_REF),
                 route("chat", [{"provider": "up", "model": "gpt-4o-mini"}]),
                 route("claude-only", [{"provider": "claude", "model": "claude-sonnet-4-5"}]),
                 virtual_key("team", secretName="team-key")]
    gw = await start_gateway(tmp_path, resources, {"up-cred": {"api-key": PROVIDER_KEY}})
    yield gw
    await gw.close()


def sent_json(upstream: FakeOpenAIPaths, i: int = -1) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(upstream.seen[i].raw)
    return body


async def test_responses_json_and_stream(gateway: Gateway, upstream: FakeOpenAIPaths) -> None:
    async with client(gateway) as c:
        raw = await c.responses.with_raw_response.create(model="chat", input="hi",
                                                         temperature=0.3)
        result = raw.parse()
        stream = await c.responses.create(model="chat", input="hi", stream=True)
        events = [event async for event in stream]
    assert result.output_text == "Hi there"
    assert raw.headers["x-llmgate-route"] == "chat"
    assert sent_json(upstream, 0) == {"model": "gpt-4o-mini", "input": "hi",
                                      "temperature": 0.3}
    assert upstream.seen[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert [e.type for e in events] == [name for name, _ in RESPONSE_EVENTS]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        "Hi there"
    assert gateway.metrics.registry.get_sample_value("llmgate_tokens_total", {
        "route": "chat", "provider": "up", "model": "gpt-4o-mini", "virtual_key": "team",
        "direction": "input"}) == 10  # 5 per answer, JSON and streamed


async def test_completions_images_and_moderations(gateway: Gateway,
                                                  upstream: FakeOpenAIPaths) -> None:
    async with client(gateway) as c:
        completion = await c.completions.create(model="chat", prompt="hello")
        image = await c.images.generate(model="chat", prompt="a cat")
        moderation = await c.moderations.create(model="chat", input="fine words")
    assert completion.choices[0].text == " world"
    assert image.data is not None and image.data[0].b64_json == "aW1hZ2U="
    assert moderation.results[0].flagged is False
    assert [s.path for s in upstream.seen] == ["/v1/completions", "/v1/images/generations",
                                               "/v1/moderations"]
    assert all(orjson.loads(s.raw)["model"] == "gpt-4o-mini" for s in upstream.seen)


async def test_binary_speech_comes_back_byte_for_byte(gateway: Gateway) -> None:
    async with client(gateway) as c:
        speech = await c.audio.speech.create(model="chat", voice="alloy", input="hi")
    assert speech.content == SPEECH
    assert speech.response.headers["content-type"] == "audio/mpeg"


async def test_binary_answers_are_streamed_not_buffered(gateway: Gateway,
                                                        upstream: FakeOpenAIPaths) -> None:
    upstream.speech_gate = asyncio.Event()
    async with aiohttp.ClientSession() as session, session.post(
            gateway.base_url + "/audio/speech",
            json={"model": "chat", "voice": "alloy", "input": "hi"},
            headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200
        first = await response.content.readexactly(1024)  # before the upstream finished
        upstream.speech_gate.set()
        rest = await response.read()
    assert first + rest == SPEECH


async def test_multipart_transcription_gets_the_targets_model_and_the_file_intact(
        gateway: Gateway, upstream: FakeOpenAIPaths) -> None:
    async with client(gateway) as c:
        result = await c.audio.transcriptions.create(
            model="chat", file=("clip.mp3", AUDIO, "audio/mpeg"), language="en")
    assert result.text == "hello from the audio"
    seen = upstream.seen[0]
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert AUDIO in seen.raw
    assert b'name="model"\r\n\r\ngpt-4o-mini\r\n' in seen.raw
    assert b'name="language"\r\n\r\nen\r\n' in seen.raw


# openai 3.x marks `audio.translations.create` deprecated; the API path itself is served.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_multipart_translation_is_passed_through_like_transcription(
        gateway: Gateway, upstream: FakeOpenAIPaths) -> None:
    async with client(gateway) as c:
        result = await c.audio.translations.create(
            model="chat", file=("clip.mp3", AUDIO, "audio/mpeg"))
    assert result.text == "hello, translated to English"
    seen = upstream.seen[0]
    assert seen.path == "/v1/audio/translations"
    assert AUDIO in seen.raw
    assert b'name="model"\r\n\r\ngpt-4o-mini\r\n' in seen.raw


async def test_routes_without_openai_targets_and_unknown_models_are_refused(
        gateway: Gateway, upstream: FakeOpenAIPaths) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as refused:
            await c.completions.create(model="claude-only", prompt="hi")
        with pytest.raises(openai.NotFoundError):
            await c.completions.create(model="nope", prompt="x")
        with pytest.raises(openai.BadRequestError) as no_model:
            await c.post("/moderations", body={"input": "x"}, cast_to=object)
    assert refused.value.body["code"] == "passthrough_not_supported"  # type: ignore[index]
    assert "claude (anthropic)" in refused.value.body["message"]  # type: ignore[index]
    assert no_model.value.body["param"] == "model"  # type: ignore[index]
    assert upstream.seen == []
