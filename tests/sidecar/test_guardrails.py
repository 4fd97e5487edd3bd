"""Guardrails: every PII type found (with checksums that matter), redacted or blocked; no false
positives on ordinary text full of numbers; block patterns; the input-token ceiling."""

from __future__ import annotations

from typing import Any

import pytest
from llmgate_contract.config import Guardrails as GuardrailsConfig
from llmgate_contract.config import Pii, Route
from llmgate_sidecar.errors import BadRequest, Forbidden
from llmgate_sidecar.policy.guardrails import (
    PII_TYPES,
    CompiledGuardrails,
    Guardrails,
    find_pii,
    iban_valid,
    luhn_valid,
)

# (type, text with the value, the value) — each must be found and replaced exactly.
DETECTED = [
    ("email", "Write to jane.doe+billing@example.co.uk today.", "jane.doe+billing@example.co.uk"),
    ("email", "cc: ops@mail.acme-corp.io", "ops@mail.acme-corp.io"),
    ("phone", "Call me on +1 415 555 2671 after lunch.", "+1 415 555 2671"),
    ("phone", "Our London desk: +44 (0) 20 7946 0958", "+44 (0) 20 7946 0958"),
    ("phone", "mobile +4915123456789", "+4915123456789"),
    ("phone", "The office line is (415) 555-2671.", "(415) 555-2671"),
    ("phone", "Dial 212-555-0147 for support", "212-555-0147"),
    ("phone", "Toll free: 1-800-555-0199", "1-800-555-0199"),
    ("phone", "UK number 020 7946 0958 is on file", "020 7946 0958"),
    ("phone", "Ruf an: 030 12345678", "030 12345678"),
    ("phone", "Appelez le 01 23 45 67 89 demain", "01 23 45 67 89"),
    ("creditCard", "Visa 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("creditCard", "card=5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("creditCard", "Amex 378282246310005 please", "378282246310005"),
    ("iban", "Pay to DE89 3704 0044 0532 0130 00 by Friday", "DE89 3704 0044 0532 0130 00"),
    ("iban", "IBAN: GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("iban", "fr14 2004 1010 0505 0001 3m02 606", "fr14 2004 1010 0505 0001 3m02 606"),
    ("ssn", "My SSN is 536-22-1234.", "536-22-1234"),
    ("ssn", "SSN 219 45 6789 on the form", "219 45 6789"),
    ("ip", "The host 192.168.1.20 is down.", "192.168.1.20"),
    ("ip", "ping 8.8.8.8", "8.8.8.8"),
    ("ip", "Server at 2001:db8::ff00:42:8329 answers", "2001:db8::ff00:42:8329"),
    ("ip", "link-local fe80::1.", "fe80::1"),
    ("ip", "mapped ::ffff:192.0.2.1 here", "::ffff:192.0.2.1"),
]

# Right shape, wrong checksum or an impossible range: not PII.
NOT_DETECTED = [
    "Visa 4111 1111 1111 1112 exp 12/29",  # Luhn fails
    "card 1234 5678 9012 3456",  # no card network starts with 1
    "IBAN GB82WEST12345698765433",  # mod-97 fails
    "IBAN DE89 3704 0044 0532 0130 0",  # wrong length for DE
    "SSN 000-12-3456",  # area 000
    "SSN 666-12-3456",  # area 666
    "SSN 912-12-3456",  # area 9xx
    "SSN 536-00-1234",  # group 00
    "SSN 536-22-0000",  # serial 0000
    "address 300.1.1.1",  # octet > 255
    "Dial 123-555-0147",  # NANP area codes never start with 1
]

ORDINARY = [
    "The meeting is on 2024-03-15 at 10:30.",
    "We shipped version 3.12.1 last week, and 3.12.2 is due on 04/22/2025.",
    "Order #48213 was delivered on March 3, 2024.",
    "Your order number is ORD-2024-001234.",
    "The total comes to $1,249.99 including tax.",
    "Prices start at €19.90 per month, or 199 per year.",
    "Upgrade to v2.4.0 from 2.3.9 before Friday.",
    "Run pip install requests==2.31.0 and numpy>=1.26.4.",
    "The request id is 550e8400-e29b-41d4-a716-446655440000.",
    "Trace 123e4567-e89b-12d3-a456-426614174000 failed at 23:59:59.",
    "Train 4521 leaves at 07:45 from platform 9.",
    "The population grew from 8,336,817 to 8,804,190 between 2010 and 2020.",
    "Invoice INV-2023-0042 is due in 30 days.",
    "Set the timeout to 1500 ms and retries to 3.",
    "The ratio was 16:9 and the resolution 1920x1080.",
    "Temperature today: 21.5 °C, humidity 64%.",
    "Chapter 12, page 345, paragraph 6.",
    "The build took 12m 34s on runner 17.",
    "Use port 8080 or 8443 for the dashboard.",
    "The coordinates are 48.8584, 2.2945.",
    "Tickets cost 45.00 USD each, 3 for 120.00 USD.",
    "ISBN 978-3-16-148410-0 is out of print.",
    "Flight LH 400 departs at 13:05 and lands at 15:50.",
    "The SKU 100-2345-67 is back in stock.",
    "Kernel 6.5.0-14-generic was installed on 2023-12-01.",
    "His score was 98.6 out of 100.",
    "The zip code 94105-1234 covers that block.",
    "Python 3.11.7 and Node 20.10.0 are required.",
    "We processed 1,000,000 events in 2.5 hours.",
    "Room 1204 is on the 12th floor.",
    "Add 2 cups of flour and 1.5 teaspoons of salt.",
    "The quarterly revenue was 4.2 billion, up 12% year over year.",
    "Commit a1b2c3d4e5f6 fixed issue #1234.",
    "The sha256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.",
    "Meet me at 5:30 pm on 12/25.",
    "The parcel weighs 2.75 kg and measures 30 x 20 x 15 cm.",
    "Error code 0x80070005 means access denied.",
    "Model gpt-4o-2024-08-06 costs 2.50 per million tokens.",
    "Between 1999 and 2004 the index rose 35.7 percent.",
    "Call std::vector::push_back and then Foo::Bar::baz.",
    "The date 15.03.2024 is a Friday.",
    "Ticket JIRA-4821 blocks release 2024.03.",
    "The time is 10:30:45 UTC.",
    "Serial number SN-8842-1123-77 is under warranty.",
    "Read RFC 7231 section 6.5.1 for details.",
    "Batch 20240315-001 contained 480 units.",
    "The container image is ghcr.io/org/app:1.4.2.",
    "Our fiscal year 2024/25 ends on 31 March.",
    "Use the MAC address 00:1a:2b:3c:4d:5e for testing.",
    "The account has 12,345 points, worth 123.45 dollars.",
    "Latency p50 was 0.42 ms and p99 was 2.7 ms at 64 connections.",
    "Download 1.2.3-beta.4 from the releases page.",
    "At 1:00:00 the counter reads 000123.",
    "Quantity 3 at 9.99 each, subtotal 29.97, shipping 4.99.",
    "The law passed 52 to 48 on 2021-11-05.",
    "Set max_tokens to 4096 and temperature to 0.7.",
]


def config(**kwargs: Any) -> GuardrailsConfig:
    return GuardrailsConfig.from_data(kwargs)


def chat(*contents: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents]}


@pytest.mark.parametrize(("kind", "text", "value"), DETECTED)
def test_each_pii_type_is_found_and_redacted(kind: str, text: str, value: str) -> None:
    rails = CompiledGuardrails(config(pii={"action": "redact", "types": [kind]}))
    body = chat(text)
    sent = rails.apply(body)
    assert sent["messages"][0]["content"] == text.replace(value, f"[REDACTED:{kind}]")
    assert body["messages"][0]["content"] == text  # the caller's body is not mutated


@pytest.mark.parametrize(("kind", "text", "value"), DETECTED)
def test_each_pii_type_blocks_without_echoing_the_value(kind: str, text: str, value: str) -> None:
    rails = CompiledGuardrails(config(pii={"action": "block", "types": [kind]}))
    with pytest.raises(Forbidden) as info:
        rails.apply(chat("hello", text))
    assert info.value.code == "guardrail_blocked"
    assert kind in info.value.message
    assert value not in info.value.message
    assert info.value.status == 403


@pytest.mark.parametrize("text", NOT_DETECTED)
def test_invalid_checksums_and_ranges_are_not_pii(text: str) -> None:
    assert find_pii(text) == []


def test_no_false_positives_on_ordinary_sentences() -> None:
    assert len(ORDINARY) >= 50
    flagged = {text: [(f.type, text[f.start:f.end]) for f in find_pii(text)]
               for text in ORDINARY}
    assert {t: f for t, f in flagged.items() if f} == {}
    rails = CompiledGuardrails(config(pii={"action": "block"}))
    body = chat(*ORDINARY)
    assert rails.apply(body) is body


def test_checksum_helpers() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("NL91 ABNA 0417 1643 00") and not iban_valid("NL91 ABNA 0417 1643 01")


def test_only_configured_types_are_acted_on() -> None:
    rails = CompiledGuardrails(config(pii={"action": "redact", "types": ["email"]}))
    sent = rails.apply(chat("mail a@b.io or call +1 415 555 2671"))
    assert sent["messages"][0]["content"] == "mail [REDACTED:email] or call +1 415 555 2671"


def test_empty_type_list_means_every_type() -> None:
    rails = CompiledGuardrails(config(pii={"action": "redact", "types": []}))
    assert rails.pii_types == frozenset(PII_TYPES)
    text = "a@b.io 536-22-1234 10.0.0.1"
    assert rails.apply(chat(text))["messages"][0]["content"] == (
        "[REDACTED:email] [REDACTED:ssn] [REDACTED:ip]")


def test_iban_digits_are_not_also_reported_as_a_phone() -> None:
    found = find_pii("DE89 3704 0044 0532 0130 00", frozenset({"phone"}))
    assert found == []


def test_redaction_reaches_content_parts_system_and_tool_results() -> None:
    rails = CompiledGuardrails(config(pii={"action": "redact"}))
    image = {"type": "image_url", "image_url": {"url": "https://x/1.png"}}
    body: dict[str, Any] = {
        "model": "m", "system": [{"type": "text", "text": "admin is root@corp.example"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "my ip is 10.1.2.3"}, image]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "ssn 536-22-1234"}]},
            {"role": "assistant", "content": "nothing here"},
        ],
    }
    sent = rails.apply(body)
    assert sent["system"][0]["text"] == "admin is [REDACTED:email]"
    assert sent["messages"][0]["content"][0]["text"] == "my ip is [REDACTED:ip]"
    assert sent["messages"][0]["content"][1] is image
    assert sent["messages"][1]["content"][0]["content"] == "ssn [REDACTED:ssn]"
    assert sent["messages"][2] is body["messages"][2]
    assert body["system"][0]["text"] == "admin is root@corp.example"


def test_redaction_of_embeddings_input() -> None:
    rails = CompiledGuardrails(config(pii={"action": "redact"}))
    sent = rails.apply({"model": "e", "input": ["x a@b.io", "plain"]})
    assert sent["input"] == ["x [REDACTED:email]", "plain"]


def test_block_patterns_name_the_rule_not_the_text() -> None:
    rails = CompiledGuardrails(config(blockPatterns=[r"(?i)\bproject\s+falcon\b",
                                                     r"sk-[A-Za-z0-9]{20,}"]))
    assert rails.apply(chat("tell me about falcons")) is not None
    with pytest.raises(Forbidden) as info:
        rails.apply(chat("status of PROJECT Falcon?"))
    assert info.value.code == "guardrail_blocked"
    assert "blockPatterns[0]" in info.value.message and "Falcon" not in info.value.message
    with pytest.raises(Forbidden, match=r"blockPatterns\[1\]"):
        rails.apply(chat([{"type": "text", "text": "key sk-abcdefghijklmnopqrstuvwx"}]))


def test_max_input_tokens() -> None:
    rails = CompiledGuardrails(config(maxInputTokens=50))
    small = chat("a short question")
    assert rails.apply(small) is small
    with pytest.raises(BadRequest) as info:
        rails.apply(chat("word " * 400))
    assert info.value.code == "input_too_large" and info.value.status == 400
    assert "50" in info.value.message


def test_compiled_once_per_route_config() -> None:
    route = Route.from_data({
        "name": "r", "model": "r",
        "group": {"targets": [{"type": "target", "provider": "p", "model": "m"}]},
        "guardrails": {"pii": {"action": "redact", "types": ["email"]}}})
    registry = Guardrails()
    first = registry.for_route(route)
    assert first is not None and registry.for_route(route) is first
    reloaded = Route.from_data(route.to_data())
    assert registry.for_route(reloaded) is not first
    plain = route.replace(guardrails=None)
    assert registry.for_route(plain) is None


def test_pii_with_action_redact_default_from_contract() -> None:
    rails = CompiledGuardrails(GuardrailsConfig(pii=Pii()))
    assert rails.apply(chat("a@b.io"))["messages"][0]["content"] == "[REDACTED:email]"
