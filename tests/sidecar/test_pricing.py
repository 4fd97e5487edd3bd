"""Pricing: table lookups with dated/vendor names, provider overrides, exact Decimal costs,
worst-case reservations, and the rough token estimate of request bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llmgate_contract import Bundle
from llmgate_contract.config import Price
from llmgate_operator.compile import compile_namespace
from llmgate_sidecar.config.pricing import (
    CACHE_WRITE_PRICES,
    PRICES,
    estimate_input_tokens,
    price_for,
    requested_output_tokens,
)
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.policy.accounting import reservation
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.upstream.transport import Transports

from tests.sidecar.harness import provider, route


@pytest.mark.parametrize(("asked", "entry"), [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("GPT-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
    ("gpt-4-0613", "gpt-4"),
    ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
    ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("models/gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ("mistral-large-2411", "mistral-large"),
    ("mistral-small-latest", "mistral-small"),
    ("command-r-plus-08-2024", "command-r-plus"),
    ("command-r7b-12-2024", "command-r7b"),
    ("deepseek-chat", "deepseek-chat"),
    ("meta-llama/llama-4-scout-17b-16e-instruct", "llama-4-scout-17b-16e-instruct"),
    ("grok-4-0709", "grok-4"),
    ("grok-2-1212", "grok-2"),
    ("amazon.nova-pro-v1:0", "nova-pro"),
])
def test_names_match_their_table_entry(asked: str, entry: str) -> None:
    price = price_for(asked)
    assert (price.matched, price.source) == (entry, "builtin")
    assert price.input_per_million == Decimal(PRICES[entry][0])


def test_mini_models_are_not_priced_as_their_big_siblings() -> None:
    assert price_for("gpt-4o-mini").input_per_million == Decimal("0.15")
    assert price_for("gpt-4o").input_per_million == Decimal("2.50")
    assert price_for("gpt-4.1-nano").output_per_million == Decimal("0.40")


def test_unknown_models_cost_nothing_and_say_so() -> None:
    price = price_for("my-finetune-v7")
    assert not price.priced and price.source == "unpriced" and price.matched is None
    assert price.cost(Usage(1000, 1000)) == 0
    assert price.worst_case(10_000, 10_000) == 0


def test_cost_is_exact_decimal_with_cached_input_discount() -> None:
    price = price_for("gpt-4o-2024-08-06")
    usage = Usage(prompt_tokens=1_000, completion_tokens=500, cached_tokens=400)
    # 600 * 2.50 + 400 * 1.25 + 500 * 10.00 per million
    assert price.cost(usage) == Decimal("0.007")
    assert price.cost(Usage(1, 0)) == Decimal("0.0000025")


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known() -> None:
    price = price_for("gpt-4")
    assert price.cost(Usage(1_000_000, 0, 1_000_000)) == Decimal("30")


def test_worst_case_assumes_no_cache_and_every_output_token() -> None:
    # Every input token might be a 1-hour cache write, Anthropic's dearest input: $6/M.
    price = price_for("claude-sonnet-4-5")
    assert price.worst_case(2_000, 1_000) == Decimal("0.027")
    assert price_for("gpt-4o").worst_case(2_000, 1_000) == Decimal("0.015")


def test_cache_writes_and_reads_are_priced_as_anthropic_prices_them() -> None:
    """claude-sonnet-4-5: input $3, 5-minute cache write $3.75, cache read $0.30, output $15
    per million. 21 fresh input tokens, 1,834 cached, 12 or 9 output tokens."""
    price = price_for("claude-sonnet-4-5-20250929")
    write = Usage(21 + 1834, 12, cached_tokens=0, cache_write_tokens=1834, known=True)
    read = Usage(21 + 1834, 9, cached_tokens=1834, known=True)
    assert price.cost(write) == Decimal("0.0071205")
    assert price.cost(read) == Decimal("0.0007482")
    # Writes cost more than plain input, reads far less.
    plain = price.cost(Usage(21 + 1834, 12, known=True))
    assert price.cost(write) > plain > price.cost(Usage(21 + 1834, 12, 1834, known=True))


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    """Anthropic prices writes to its 1-hour cache at 2x input ($6/M for sonnet-4-5)."""
    price = price_for("claude-sonnet-4-5")
    both = Usage(3_000_000, 0, cache_write_tokens=2_000_000, known=True,
                 cache_write_1h_tokens=1_000_000)
    assert price.cost(both) == Decimal("3") + Decimal("3.75") + Decimal("6")
    assert price.worst_case(1_000_000, 0) == Decimal("6")
    # An override without a 1-hour price bills those writes as other cache writes.
    override = price_for("c", {"c": Price(input_per_million=Decimal("3"),
                                          output_per_million=Decimal("15"),
                                          cache_write_per_million=Decimal("4"))})
    assert override.cost(both) == Decimal("3") + Decimal("4") + Decimal("4")


def test_cache_writes_cost_the_input_price_where_the_vendor_charges_no_premium() -> None:
    price = price_for("gpt-4o")
    assert price.cost(Usage(1_000_000, 0, cache_write_tokens=1_000_000, known=True)) == \
        Decimal("2.50")


def test_override_with_a_cache_write_price() -> None:
    overrides = {"my-claude": Price(input_per_million=Decimal("3"),
                                    output_per_million=Decimal("15"),
                                    cached_input_per_million=Decimal("0.3"),
                                    cache_write_per_million=Decimal("6"))}
    price = price_for("my-claude", overrides)
    assert price.cost(Usage(2_000_000, 0, 0, 1_000_000, known=True)) == Decimal("9")
    no_write_price = price_for("my-claude", {"my-claude": Price(
        input_per_million=Decimal("3"), output_per_million=Decimal("15"))})
    assert no_write_price.cost(Usage(2_000_000, 0, 0, 1_000_000, known=True)) == Decimal("6")


@given(prompt=st.integers(-5, 10**7), reads=st.integers(-5, 10**7),
       writes=st.integers(-5, 10**7), hour=st.integers(-5, 10**7),
       output=st.integers(-5, 10**6))
def test_cost_is_never_negative_and_never_above_the_worst_case(
        prompt: int, reads: int, writes: int, hour: int, output: int) -> None:
    """Whatever an upstream reports (parts larger than the whole, negatives), the parts are
    clamped into the prompt: the cost stays between zero and the reservation's bound."""
    price = price_for("claude-opus-4-1")
    cost = price.cost(Usage(prompt, output, reads, writes, known=True,
                            cache_write_1h_tokens=hour))
    assert Decimal(0) <= cost <= price.worst_case(prompt, output)


def test_provider_overrides_win_and_match_dated_names() -> None:
    overrides = {"GPT-4o": Price(input_per_million=Decimal("1.00"),
                                 output_per_million=Decimal("4.00"))}
    price = price_for("gpt-4o-2024-11-20", overrides)
    assert (price.source, price.matched) == ("override", "gpt-4o")
    assert price.cost(Usage(1_000_000, 1_000_000, 500_000)) == Decimal("5.00")
    # Models the override does not name keep the built-in price.
    assert price_for("gpt-4o-mini", overrides).source == "builtin"
    # A self-hosted model becomes priced through an override.
    local = {"llama3:8b": Price(input_per_million=Decimal("0.01"),
                                output_per_million=Decimal("0.02"),
                                cached_input_per_million=Decimal("0"))}
    assert price_for("llama3:8b", local).cost(Usage(2_000_000, 0, 1_000_000)) == Decimal("0.01")


def test_usage_from_openai() -> None:
    usage = Usage.from_openai({"prompt_tokens": 120, "completion_tokens": 30,
                               "prompt_tokens_details": {"cached_tokens": 64}})
    assert usage == Usage(120, 30, 64, known=True)
    assert Usage.from_openai({"prompt_tokens": 120, "completion_tokens": 30,
                              "prompt_tokens_details": {"cached_tokens": 64,
                                                        "cache_write_tokens": 50}}) == \
        Usage(120, 30, 64, 50, known=True)
    # DeepSeek reports cache hits at the top level.
    assert Usage.from_openai({"prompt_tokens": 120, "completion_tokens": 30,
                              "prompt_cache_hit_tokens": 100,
                              "prompt_cache_miss_tokens": 20}).cached_tokens == 100
    assert Usage(120, 30, 64, 50, known=True).to_openai()["prompt_tokens_details"] == \
        {"cached_tokens": 64, "cache_write_tokens": 50}
    assert Usage.from_openai(None) == Usage()
    assert Usage.from_openai({"prompt_tokens": 5, "completion_tokens": None}) == \
        Usage(5, 0, known=True)


def test_every_table_row_is_a_valid_price() -> None:
    for name, (inp, out, cached) in PRICES.items():
        assert name == name.lower()
        assert Decimal(inp) >= 0 and Decimal(out) >= 0
        assert cached is None or Decimal(cached) <= Decimal(inp)
        assert price_for(name).matched == name            # no entry shadows another
    for name, (written, hour) in CACHE_WRITE_PRICES.items():
        # A premium (or it needs no row), and the 1-hour cache's the higher one.
        assert Decimal(PRICES[name][0]) < Decimal(written) < Decimal(hour)


def test_estimate_counts_text_tools_and_images_roughly() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 400},
            {"role": "user", "content": [
                {"type": "text", "text": "y" * 400},
                {"type": "image_url", "image_url": {"url": "data:..."}},
            ]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    tools_chars = len('[{"type": "function", "function": {"name": "f", "parameters": {}}}]')
    expected = -(-(800 + tools_chars) // 4) + 2 * 4 + 765
    assert estimate_input_tokens(body) == expected


def test_estimate_of_anthropic_and_embedding_bodies() -> None:
    anthropic = {"system": "s" * 40, "messages": [{"role": "user", "content": "u" * 40}]}
    assert estimate_input_tokens(anthropic) == 20 + 4
    assert estimate_input_tokens({"input": ["a" * 8, "b" * 8]}) == 4
    assert estimate_input_tokens({"input": [[1, 2, 3], [4, 5]]}) == 5   # token ids: exact
    assert estimate_input_tokens({"messages": "not a list", "input": 7}) == 0


def test_requested_output_tokens() -> None:
    assert requested_output_tokens({"max_tokens": 100}) == 100
    assert requested_output_tokens({"max_completion_tokens": 50, "max_tokens": 100}) == 100
    assert requested_output_tokens({"max_tokens": 100, "n": 3}) == 300
    assert requested_output_tokens({"max_tokens": True}) is None
    assert requested_output_tokens({}) is None



async def test_prices_and_price_plans_belong_to_their_runtime() -> None:
    """A reload's new prices are used at once: memos live on the runtime, not in a module
    cache keyed by object ids (which a later object may reuse)."""
    transports = Transports()
    try:
        for cost in ("1000000", "2000000", "3000000"):  # $1, $2, $3 per output token
            result = compile_namespace("default", [
                provider("up", baseURL="http://127.0.0.1:9", pricing={
                    "m": {"inputPerMillion": "0", "outputPerMillion": cost}}),
                route("chat", [{"provider": "up", "model": "m", "params": {"max_tokens": 7}}])],
                {}, now=datetime.now(UTC))
            runtime = Runtime.build(Bundle(result.config, result.credentials), transports)
            chat = runtime.routes[0]
            assert runtime.price_plan(chat.group) is runtime.price_plan(chat.group)  # memo
            body = {"messages": [{"role": "user", "content": "x"}]}
            assert reservation(runtime, chat, chat.group, body).usd == \
                Decimal(cost) / 1_000_000 * 7
    finally:
        await transports.close()
