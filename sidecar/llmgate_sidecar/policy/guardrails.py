"""Input guardrails of a route: PII redact/block, block patterns, an input-size ceiling.

`Guardrails.for_route(route)` (one instance per app) compiles a route's rules once per config
object; `CompiledGuardrails.apply(body)` is called by the request handler before routing and
returns the body to send (redacted, or the same object if nothing changed), or raises
`Forbidden` (code `guardrail_blocked`) / `BadRequest` (code `input_too_large`). Detection is
pure (no I/O); errors name the rule or PII type, never the matched text. Block patterns run
on RE2 (linear time, see `llmgate_contract.patterns`); `Guardrails.check` runs inputs larger
than `OFFLOAD_CHARS` on a small thread pool so a big request never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmgate_contract.config import Guardrails as GuardrailsConfig
from llmgate_contract.config import Route
from llmgate_contract.patterns import compile_pattern

from llmgate_sidecar.config.pricing import estimate_input_tokens
from llmgate_sidecar.errors import BadRequest, Forbidden

PII_TYPES = ("email", "phone", "creditCard", "iban", "ssn", "ip")
# Overlapping candidates are resolved in this order (an IBAN's digits are not also a phone).
_PRIORITY = {"email": 0, "creditCard": 1, "iban": 2, "ssn": 3, "ip": 4, "phone": 5}
# Every detector needs a digit, an "@" or a ":"; text without any is skipped in one scan.
_MAYBE_PII = re.compile(r"[\d@:]")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])")
# E.164-style: "+" country code, then digit runs separated by one space/dot/dash or a
# parenthesised group. Each repetition starts with a non-digit, so matching is linear.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d+(?:(?:[ .-]|[ .-]?\(\d{1,4}\)[ .-]?)\d+)*(?!\d)")
# North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-0199.
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[-. ])?(?:\((\d{3})\) ?|(\d{3})[-. ])(\d{3})[-. ]\d{4}(?![\w-])(?!\.\d)")
# National numbers with a trunk prefix 0 (UK, DE, FR, ...): at least one separator.
_PHONE_TRUNK = re.compile(r"(?<![\w+.-])0\d{1,4}(?:[ -]\d{2,8}){1,4}(?![\w-])(?!\.\d)")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}"
                   r"(?: ?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w-])(?!\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?::(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\d)")

# Registered IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# SSNs the SSA never issues beyond the range rules: famous specimen/advertising numbers.
_SSN_SPECIMENS = frozenset({"078051120", "219099999", "123456789"})


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_brand_ok(digits: str) -> bool:
    """Issuer prefix and length of the networks in use; a random Luhn pass rarely fits."""
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649 or two == 62:
        return 16 <= n <= 19  # Discover, UnionPay
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # Diners Club
    return False


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_SPECIMENS


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _phone_intl_ok(m: re.Match[str]) -> bool:
    return 8 <= len(_digits(m.group())) <= 15


def _phone_nanp_ok(m: re.Match[str]) -> bool:
    area = m.group(1) or m.group(2)
    return area[0] != "1" and area[0] != "0" and m.group(3)[0] not in "01"


def _phone_trunk_ok(m: re.Match[str]) -> bool:
    return 10 <= len(_digits(m.group())) <= 11


def _card_ok(m: re.Match[str]) -> bool:
    digits = _digits(m.group())
    return luhn_valid(digits) and _card_brand_ok(digits)


def _ssn_ok(m: re.Match[str]) -> bool:
    return ssn_valid(m.group(1), m.group(3), m.group(4))


def _ipv6_ok(m: re.Match[str]) -> bool:
    text = m.group()
    if text.count(":") < 2 or not any(ch not in ":" for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_Validator = Callable[[re.Match[str]], bool] | None
# (type, pattern, validator, a character the text must contain for the pattern to apply;
# "" means a digit). The gate skips most scans on most text.
_DETECTORS: tuple[tuple[str, re.Pattern[str], _Validator, str], ...] = (
    ("email", _EMAIL, None, "@"),
    ("creditCard", _CARD, _card_ok, ""),
    ("iban", _IBAN, lambda m: iban_valid(m.group()), ""),
    ("ssn", _SSN, _ssn_ok, ""),
    ("ip", _IPV4, None, "."),
    ("ip", _IPV6, _ipv6_ok, ":"),
    ("phone", _PHONE_INTL, _phone_intl_ok, "+"),
    ("phone", _PHONE_NANP, _phone_nanp_ok, ""),
    ("phone", _PHONE_TRUNK, _phone_trunk_ok, ""),
)
_DIGIT = re.compile(r"\d")
# Inputs at least this long are checked on the guardrail thread pool, not on the event loop.
OFFLOAD_CHARS = 32 * 1024
WORKERS = 2


@dataclass(frozen=True, slots=True)
class Finding:
    type: str
    start: int
    end: int


def find_pii(text: str, types: frozenset[str] = frozenset(PII_TYPES)) -> list[Finding]:
    """Non-overlapping PII spans of the given types, in text order.

    Every detector runs (even for types not asked for) so that, say, an IBAN's digit groups
    are claimed by the IBAN and never reported as a phone number.
    """
    if not _MAYBE_PII.search(text):
        return []
    candidates: list[Finding] = []
    has_digit = _DIGIT.search(text) is not None
    for kind, pattern, valid, gate in _DETECTORS:
        if (gate not in text) if gate else not has_digit:
            continue
        for m in pattern.finditer(text):
            if valid is None or valid(m):
                candidates.append(Finding(kind, m.start(), m.end()))
    candidates.sort(key=lambda f: (f.start, -(f.end - f.start), _PRIORITY[f.type]))
    chosen: list[Finding] = []
    for finding in candidates:
        if chosen and finding.start < chosen[-1].end:
            continue
        chosen.append(finding)
    return [f for f in chosen if f.type in types]


def redact(text: str, findings: list[Finding]) -> str:
    parts: list[str] = []
    last = 0
    for f in findings:
        parts.append(text[last:f.start])
        parts.append(f"[REDACTED:{f.type}]")
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


def _map_content(value: Any, fn: Callable[[str], str]) -> Any:
    """A content value (string, or list of parts/blocks) with `fn` applied to its text."""
    if isinstance(value, str):
        return fn(value)
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    changed = False
    for part in value:
        new = part
        if isinstance(part, str):
            new = fn(part)
        elif isinstance(part, dict):
            new = _map_part(part, fn)
        changed = changed or new is not part
        out.append(new)
    return out if changed else value


def _map_part(part: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    # OpenAI content parts and Anthropic blocks carry text under "text"; Anthropic
    # tool_result blocks nest more content under "content".
    updates: dict[str, Any] = {}
    for field in ("text", "content"):
        if field in part:
            new = _map_content(part[field], fn)
            if new is not part[field]:
                updates[field] = new
    return {**part, **updates} if updates else part


def map_input_text(body: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """The body with `fn` applied to every input text; unchanged parts are shared, and the
    body object itself comes back when nothing changed. Covers chat `messages[].content`,
    Anthropic `system`, embeddings `input` and completions `prompt`."""
    updates: dict[str, Any] = {}
    messages = body.get("messages")
    if isinstance(messages, list):
        new_messages = [_map_part(m, fn) if isinstance(m, dict) else m for m in messages]
        if any(a is not b for a, b in zip(new_messages, messages, strict=True)):
            updates["messages"] = new_messages
    for field in ("system", "input", "prompt"):
        if field in body:
            new = _map_content(body[field], fn)
            if new is not body[field]:
                updates[field] = new
    if not updates:
        return body if isinstance(body, dict) else dict(body)
    return {**body, **updates}


def input_texts(body: Mapping[str, Any]) -> Iterator[str]:
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    map_input_text(body, collect)
    yield from found


class CompiledGuardrails:
    """One route's guardrails, compiled; `apply` is safe to call from many requests."""

    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        self.patterns = [compile_pattern(p) for p in config.block_patterns]
        pii = config.pii
        # An empty type list means every type (the CRD defaults to all of them).
        self.pii_types = frozenset(pii.types or PII_TYPES) if pii else frozenset()
        self.pii_action = pii.action if pii else "redact"
        self.max_input_tokens = config.max_input_tokens
        self.scans = bool(self.patterns or self.pii_types)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check (and maybe redact) a request body; the returned body is what to send."""
        # Size first: regexes never run over an input that is going to be refused anyway.
        if self.max_input_tokens is not None:
            estimated = estimate_input_tokens(body)
            if estimated > self.max_input_tokens:
                raise BadRequest(
                    f"the input is about {estimated} tokens; this route accepts at most "
                    f"{self.max_input_tokens}", code="input_too_large", param="messages")
        if not self.patterns and not self.pii_types:
            return body
        texts = list(input_texts(body))
        for i, pattern in enumerate(self.patterns):
            if any(pattern.search(text) for text in texts):
                raise Forbidden(f"request blocked by guardrail: input matches blockPatterns[{i}]",
                                code="guardrail_blocked", param="messages")
        if not self.pii_types:
            return body
        if self.pii_action == "block":
            for text in texts:
                findings = find_pii(text, self.pii_types)
                if findings:
                    raise Forbidden(f"request blocked by guardrail: input contains PII "
                                    f"({findings[0].type})", code="guardrail_blocked",
                                    param="messages")
            return body
        return map_input_text(body, self._redact)

    def _redact(self, text: str) -> str:
        findings = find_pii(text, self.pii_types)
        return redact(text, findings) if findings else text


def input_chars(body: Mapping[str, Any]) -> int:
    return sum(len(text) for text in input_texts(body))


class Guardrails:
    """Compiled guardrails by route config identity; one per app, shared by requests.

    Keyed by `id()` of the contract object while holding a reference to it (so an id cannot
    be reused by a new object while its entry lives); bounded so reloads do not leak. Owns
    the thread pool big inputs are checked on (`close` it with the app).
    """

    def __init__(self, max_entries: int = 1024, *, workers: int = WORKERS) -> None:
        self._compiled: dict[int, tuple[GuardrailsConfig, CompiledGuardrails]] = {}
        self._max = max_entries
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="llmgate-guardrails")

    async def check(self, rails: CompiledGuardrails, body: dict[str, Any]) -> dict[str, Any]:
        """`rails.apply(body)`, off the event loop when the input is big: the scan is linear
        but a 350 k-character input still takes tens of milliseconds of CPU."""
        if not rails.scans or input_chars(body) < OFFLOAD_CHARS:
            return rails.apply(body)
        return await asyncio.get_running_loop().run_in_executor(self._pool, rails.apply, body)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def for_route(self, route: Route) -> CompiledGuardrails | None:
        config = route.guardrails
        if config is None:
            return None
        entry = self._compiled.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
        compiled = CompiledGuardrails(config)
        if len(self._compiled) >= self._max:
            self._compiled.pop(next(iter(self._compiled)))
        self._compiled[id(config)] = (config, compiled)
        return compiled
