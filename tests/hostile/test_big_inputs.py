"""Big guardrail inputs do not stall the event loop: a 350 k-character PII scan runs on the
guardrail pool, so while several run, the loop keeps turning (other requests, probes).

No latency number is asserted (timings belong to bench/, and a loaded machine moves them):
the test records on which thread every scan of a big input ran — never the event loop's —
and that the loop kept answering probes while the big requests were in flight."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from llmgate_sidecar.policy import guardrails

from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

IN_FLIGHT = 4
SENTENCE = ("Call Jane at +44 20 7946 0958 or jane.doe@example.com about order 4411-2231, "
            "card 4111 1111 1111 1111 expires soon; the server is 10.0.0.12. ")


def big_text(chars: int = 350_000) -> str:
    return (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("mock", "mock", mock={"reply": "ok"}),
        route("m", [{"provider": "mock", "model": "m"}],
              guardrails={"pii": {"action": "redact"}}),
        virtual_key("team", secretName="team-key")])
    try:
        yield gw
    finally:
        await gw.close()


async def test_big_pii_inputs_are_scanned_off_the_loop(gateway: Gateway,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    text = big_text()
    scanned_on: list[int] = []
    real_find_pii = guardrails.find_pii

    def recording_find_pii(text: str, *args: Any, **kwargs: Any) -> Any:
        if len(text) >= 100_000:  # the big inputs of this test
            scanned_on.append(threading.get_ident())
        return real_find_pii(text, *args, **kwargs)

    # Wraps the real scanner (it still runs and redacts) only to see which thread calls it.
    monkeypatch.setattr(guardrails, "find_pii", recording_find_pii)
    loop_thread = threading.get_ident()
    async with aiohttp.ClientSession() as session:
        async def ask() -> int:
            async with session.post(
                    gateway.base_url + "/chat/completions",
                    headers={"Authorization": f"Bearer {KEY}"},
                    json={"model": "m", "messages": [{"role": "user", "content": text}]}) as r:
                await r.read()
                return r.status

        async def probe_while(busy: asyncio.Future[Any]) -> int:
            answered = 0
            while not busy.done():
                async with session.get(gateway.ops_url + "/healthz") as r:
                    assert r.status == 200
                    answered += 1
                await asyncio.sleep(0.01)
            return answered

        requests = asyncio.gather(*(ask() for _ in range(IN_FLIGHT)))
        answered = await probe_while(requests)
        statuses = await requests
    assert statuses == [200] * IN_FLIGHT
    assert len(scanned_on) >= IN_FLIGHT, "every big input is scanned"
    assert loop_thread not in scanned_on, "a big input was scanned on the event loop"
    assert answered >= 1, "the loop answered no probe while big requests were in flight"
