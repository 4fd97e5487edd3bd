"""Guardrail block patterns cannot freeze the sidecar: RE2 matches in linear time, and what
RE2 cannot bound is refused where a pattern enters (CR validation -> InvalidSpec, compiled
config load -> last good config kept), never discovered at match time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from llmgate_contract import TornBundleError, read_bundle
from llmgate_contract.patterns import PatternError, compile_pattern
from llmgate_operator.compile import compile_namespace

from tests.hostile.sidecar_process import AUTH, SidecarProcess, chat_body
from tests.sidecar.harness import compile_to, provider, route, virtual_key

EVIL = "(a+)+$"


def crs(patterns: list[str]) -> list[dict]:
    return [provider("mock", "mock", mock={"reply": "ok"}),
            route("guarded", [{"provider": "mock", "model": "m"}],
                  guardrails={"blockPatterns": patterns}),
            virtual_key("team", secretName="team-key")]


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\1", "backreferences"),
    (r"(?<=secret)word", "lookbehind"),
    (r"foo(?=bar)", "lookahead"),
    (r"(?!x)y", "negative lookahead"),
    (r"(x{1000}){100}", "repetition counts above 1000"),
    ("a" * 2000, "at most 1024"),
])
def test_unbounded_patterns_are_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason):
        compile_pattern(pattern)


def test_the_operator_reports_invalid_spec_naming_the_pattern() -> None:
    result = compile_namespace("default", crs([r"(a)\1"]), {"team-key": {"api-key": "k"}},
                               now=datetime.now(UTC))
    condition = result.conditions[("LLMRoute", "guarded")]
    assert condition.reason == "InvalidSpec"
    assert "blockPatterns[0]" in condition.message and "backreferences" in condition.message


def test_a_compiled_config_with_an_unbounded_pattern_is_not_loaded(tmp_path: Path) -> None:
    """A config written by an older operator (or by hand) is refused on load, so the sidecar
    keeps its last good config instead of matching a pattern it cannot bound."""
    compile_to(tmp_path, crs(["fine"]), {"team-key": {"api-key": "k"}})
    config = json.loads((tmp_path / "config" / "config.json").read_text())
    config["routes"][0]["guardrails"]["blockPatterns"] = [r"(?<=a)b"]
    files = {"config.json": json.dumps(config), "generation": "x"}
    with pytest.raises(TornBundleError, match="lookbehind"):
        read_bundle(files, {"generation": "x"})


async def test_catastrophic_pattern_on_5kb_input_keeps_the_sidecar_responsive(
        tmp_path: Path) -> None:
    """`(a+)+$` against 5 kB: a backtracking engine never returns; RE2 answers at once,
    /healthz keeps answering and SIGTERM stops the process."""
    sidecar = SidecarProcess(tmp_path, crs([EVIL]))
    try:
        await sidecar.ready()
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            evil = session.post(sidecar.url + "/v1/chat/completions", headers=AUTH,
                                json=chat_body("guarded", "a" * 5000 + "!"))
            request = asyncio.ensure_future(evil)
            assert await sidecar.healthy(timeout=5)
            async with await request as response:
                assert response.status == 200  # no match: the input ends with "!"
            async with session.post(sidecar.url + "/v1/chat/completions", headers=AUTH,
                                    json=chat_body("guarded", "a" * 5000)) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "guardrail_blocked"
        assert await sidecar.healthy(timeout=5)
        assert sidecar.terminate(timeout=15) == 0
    finally:
        sidecar.kill()
