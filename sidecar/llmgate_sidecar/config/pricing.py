"""What a request costs: the built-in price table, per-provider overrides, token estimates.

Called by the app before routing (`worst_case` of the chosen target, to reserve budget) and
after the response (`cost` of the real usage, to settle). Decimal USD throughout, never
floats. Pure: no I/O, no limits (limits.py), no knowledge of the wire beyond the few request
fields counted by `estimate_input_tokens`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from llmgate_contract.config import Price

from llmgate_sidecar.upstream.providers.base import Usage

PRICES_AS_OF = "2025-11"
# USD per million tokens: (input, output, cached input or None when the vendor lists none,
# in which case cached tokens cost the input price). From the vendors' public pricing pages,
# standard tier, prompts under any long-context surcharge threshold. Keys are lower-case
# model names without date/version suffixes (see `_candidates`). Override per provider with
# ProviderSecret `spec.pricing`.
PRICES: dict[str, tuple[str, str, str | None]] = {
    # OpenAI
    "gpt-5": ("1.25", "10.00", "0.125"),
    "gpt-5-chat": ("1.25", "10.00", "0.125"),
    "gpt-5-mini": ("0.25", "2.00", "0.025"),
    "gpt-5-nano": ("0.05", "0.40", "0.005"),
    "gpt-4.1": ("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": ("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": ("0.10", "0.40", "0.025"),
    "gpt-4o": ("2.50", "10.00", "1.25"),
    "gpt-4o-mini": ("0.15", "0.60", "0.075"),
    "chatgpt-4o": ("5.00", "15.00", None),
    "o1": ("15.00", "60.00", "7.50"),
    "o1-mini": ("1.10", "4.40", "0.55"),
    "o1-pro": ("150.00", "600.00", None),
    "o3": ("2.00", "8.00", "0.50"),
    "o3-pro": ("20.00", "80.00", None),
    "o3-mini": ("1.10", "4.40", "0.55"),
    "o4-mini": ("1.10", "4.40", "0.275"),
    "gpt-4-turbo": ("10.00", "30.00", None),
    "gpt-4-1106-preview": ("10.00", "30.00", None),
    "gpt-4-0125-preview": ("10.00", "30.00", None),
    "gpt-4": ("30.00", "60.00", None),
    "gpt-4-32k": ("60.00", "120.00", None),
    "gpt-3.5-turbo": ("0.50", "1.50", None),
    "text-embedding-3-small": ("0.02", "0", None),
    "text-embedding-3-large": ("0.13", "0", None),
    "text-embedding-ada-002": ("0.10", "0", None),
    # Anthropic (cached = cache read)
    "claude-opus-4-5": ("5.00", "25.00", "0.50"),
    "claude-opus-4-1": ("15.00", "75.00", "1.50"),
    "claude-opus-4": ("15.00", "75.00", "1.50"),
    "claude-sonnet-4-5": ("3.00", "15.00", "0.30"),
    "claude-sonnet-4": ("3.00", "15.00", "0.30"),
    "claude-haiku-4-5": ("1.00", "5.00", "0.10"),
    "claude-3-7-sonnet": ("3.00", "15.00", "0.30"),
    "claude-3-5-sonnet": ("3.00", "15.00", "0.30"),
    "claude-3-5-haiku": ("0.80", "4.00", "0.08"),
    "claude-3-opus": ("15.00", "75.00", "1.50"),
    "claude-3-haiku": ("0.25", "1.25", "0.03"),
    # Google Gemini (prompts up to 200k tokens)
    "gemini-2.5-pro": ("1.25", "10.00", None),
    "gemini-2.5-flash": ("0.30", "2.50", None),
    "gemini-2.5-flash-lite": ("0.10", "0.40", None),
    "gemini-2.0-flash": ("0.10", "0.40", "0.025"),
    "gemini-2.0-flash-lite": ("0.075", "0.30", None),
    "gemini-1.5-pro": ("1.25", "5.00", None),
    "gemini-1.5-flash": ("0.075", "0.30", None),
    "gemini-embedding-001": ("0.15", "0", None),
    # Mistral
    "mistral-large": ("2.00", "6.00", None),
    "mistral-medium": ("0.40", "2.00", None),
    "mistral-small": ("0.10", "0.30", None),
    "magistral-medium": ("2.00", "5.00", None),
    "magistral-small": ("0.50", "1.50", None),
    "codestral": ("0.30", "0.90", None),
    "pixtral-large": ("2.00", "6.00", None),
    "ministral-8b": ("0.10", "0.10", None),
    "ministral-3b": ("0.04", "0.04", None),
    "open-mistral-nemo": ("0.15", "0.15", None),
    "mistral-embed": ("0.10", "0", None),
    # Cohere
    "command-a": ("2.50", "10.00", None),
    "command-r-plus": ("2.50", "10.00", None),
    "command-r": ("0.15", "0.60", None),
    "command-r7b": ("0.0375", "0.15", None),
    "embed-v4.0": ("0.12", "0", None),
    "embed-english-v3.0": ("0.10", "0", None),
    "embed-multilingual-v3.0": ("0.10", "0", None),
    # DeepSeek (cached = cache hit)
    "deepseek-chat": ("0.28", "0.42", "0.028"),
    "deepseek-reasoner": ("0.28", "0.42", "0.028"),
    # Groq
    "llama-3.3-70b-versatile": ("0.59", "0.79", None),
    "llama-3.1-8b-instant": ("0.05", "0.08", None),
    "llama-4-scout-17b-16e-instruct": ("0.11", "0.34", None),
    "llama-4-maverick-17b-128e-instruct": ("0.20", "0.60", None),
    "qwen3-32b": ("0.29", "0.59", None),
    "kimi-k2-instruct": ("1.00", "3.00", None),
    "gpt-oss-120b": ("0.15", "0.75", None),
    "gpt-oss-20b": ("0.10", "0.50", None),
    # Together
    "llama-3.3-70b-instruct-turbo": ("0.88", "0.88", None),
    # xAI
    "grok-4": ("3.00", "15.00", "0.75"),
    "grok-4-fast-reasoning": ("0.20", "0.50", "0.05"),
    "grok-4-fast-non-reasoning": ("0.20", "0.50", "0.05"),
    "grok-code-fast-1": ("0.20", "1.50", "0.02"),
    "grok-3": ("3.00", "15.00", "0.75"),
    "grok-3-mini": ("0.30", "0.50", "0.075"),
    "grok-2": ("2.00", "10.00", None),
    # Amazon Bedrock
    "nova-pro": ("0.80", "3.20", None),
    "nova-lite": ("0.06", "0.24", None),
    "nova-micro": ("0.035", "0.14", None),
}
# USD per million tokens written to the prompt cache, for vendors that charge a premium for
# the write: (default 5-minute cache, 1-hour cache). Anthropic, also on Bedrock and Vertex:
# 1.25x and 2x input. Models not listed pay the input price for cache writes (OpenAI,
# Gemini implicit caching, DeepSeek: a write is an ordinary cache miss).
CACHE_WRITE_PRICES: dict[str, tuple[str, str]] = {
    "claude-opus-4-5": ("6.25", "10.00"),
    "claude-opus-4-1": ("18.75", "30.00"),
    "claude-opus-4": ("18.75", "30.00"),
    "claude-sonnet-4-5": ("3.75", "6.00"),
    "claude-sonnet-4": ("3.75", "6.00"),
    "claude-haiku-4-5": ("1.25", "2.00"),
    "claude-3-7-sonnet": ("3.75", "6.00"),
    "claude-3-5-sonnet": ("3.75", "6.00"),
    "claude-3-5-haiku": ("1.00", "1.60"),
    "claude-3-opus": ("18.75", "30.00"),
    "claude-3-haiku": ("0.30", "0.50"),
}

MILLION = Decimal(1_000_000)
# Bedrock ids: "us.anthropic.claude-3-5-haiku-20241022-v1:0"; routers: "openai/gpt-4o".
_PREFIX = re.compile(r"^(?:.*/)?(?:(?:us|eu|apac|global)\.)?(?:[a-z0-9-]+\.(?=[a-z]))?")
# Tried in order, repeatedly, each strip giving the next candidate name.
_SUFFIXES = tuple(re.compile(p) for p in (
    r"@[\w.-]+$",                 # Vertex: claude-3-5-sonnet-v2@20241022
    r"-v\d+:\d+$",                # Bedrock: -v1:0
    r"-latest$",
    r"-\d{4}-\d{2}-\d{2}$",       # gpt-4o-2024-08-06
    r"-\d{8}$",                   # claude-sonnet-4-20250514
    r"-\d{2}-\d{4}$",             # command-r-08-2024
    r"-\d{4}$",                   # gpt-4-0613, mistral-large-2411, grok-2-1212
    r"-\d{2}-\d{2}$",             # gemini-2.5-pro-preview-06-05
    r"-\d{3}$",                   # gemini-1.5-pro-002
    r"-preview$",
    r"-v\d+$",                    # claude-3-5-sonnet-v2
))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The price of one model for one provider; all zero (and `priced` False) if unknown."""

    model: str
    matched: str | None
    source: Literal["override", "builtin", "unpriced"]
    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal
    cache_write_per_million: Decimal
    cache_write_1h_per_million: Decimal

    @property
    def priced(self) -> bool:
        return self.source != "unpriced"

    def cost(self, usage: Usage) -> Decimal:
        """Prompt tokens read from the cache, written to it (for 5 minutes or an hour) and
        the rest each at their own price (the counts are clamped so the parts never exceed
        the prompt)."""
        prompt = max(usage.prompt_tokens, 0)
        cached = min(max(usage.cached_tokens, 0), prompt)
        written = min(max(usage.cache_write_tokens, 0), prompt - cached)
        hour = min(max(usage.cache_write_1h_tokens, 0), written)
        fresh = prompt - cached - written
        total = (fresh * self.input_per_million + cached * self.cached_input_per_million
                 + (written - hour) * self.cache_write_per_million
                 + hour * self.cache_write_1h_per_million
                 + max(usage.completion_tokens, 0) * self.output_per_million)
        return total / MILLION

    def worst_case(self, input_tokens: int, max_output_tokens: int) -> Decimal:
        """Upper bound of a request's cost: no cache discount (every input token at the
        dearest of the input and the cache-write prices), every output token used."""
        per_input = max(self.input_per_million, self.cache_write_per_million,
                        self.cache_write_1h_per_million)
        return (max(input_tokens, 0) * per_input
                + max(max_output_tokens, 0) * self.output_per_million) / MILLION


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> ModelPrice:
    """Price of `model`; `overrides` is a provider's `pricing` and wins over the table.

    Names match case-insensitively, first exactly, then without vendor/region prefixes and
    date or version suffixes (`gpt-4o-2024-08-06` -> `gpt-4o`)."""
    names = _candidates(model.strip().lower())
    if overrides:
        lowered = {name.lower(): price for name, price in overrides.items()}
        for name in names:
            price = lowered.get(name)
            if price is not None:
                inp, cached = price.input_per_million, price.cached_input_per_million
                written = price.cache_write_per_million
                written = inp if written is None else written
                hour = price.cache_write_1h_per_million
                return ModelPrice(model, name, "override", inp, price.output_per_million,
                                  inp if cached is None else cached, written,
                                  written if hour is None else hour)
    return _builtin(model, names)


@lru_cache(maxsize=1024)
def _candidates(model: str) -> tuple[str, ...]:
    names = [model]
    name = _PREFIX.sub("", model) or model
    while True:
        if name not in names:
            names.append(name)
        for suffix in _SUFFIXES:
            shorter = suffix.sub("", name)
            if shorter != name and shorter:
                name = shorter
                break
        else:
            return tuple(names)


@lru_cache(maxsize=1024)
def _builtin(model: str, names: tuple[str, ...]) -> ModelPrice:
    for name in names:
        row = PRICES.get(name)
        if row is not None:
            inp, out, cached = (Decimal(x) if x is not None else None for x in row)
            assert inp is not None and out is not None
            written, hour = (Decimal(x) for x in CACHE_WRITE_PRICES.get(name) or (inp, inp))
            return ModelPrice(model, name, "builtin", inp, out, inp if cached is None else cached,
                              written, hour)
    zero = Decimal(0)
    return ModelPrice(model, None, "unpriced", zero, zero, zero, zero, zero)


# Two counts of a request's input, from one walk over the body (`measure_input`):
# - `estimate`: about 4 characters per token (OpenAI's rule of thumb for English), a fixed
#   overhead per message, an image at OpenAI's 1024x1024 high-detail count. It feeds
#   tokens/min admission (settle replaces it with the real count) and guardrails'
#   maxInputTokens, where over-counting would refuse honest requests.
# - `bound`: never below what a provider can bill, so the budget reservation is a true worst
#   case: every token of a byte-level BPE (and every SentencePiece piece with byte fallback)
#   covers at least one UTF-8 byte, so text costs at most its byte count; messages, the
#   reply priming and a tool-use system prompt get generous fixed overheads; images count by
#   the providers' documented formulas (`image_token_bound`), never by their base64 size.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765       # one 1024x1024 image at high detail, OpenAI's accounting
BOUND_PER_MESSAGE = 8        # role and separators (OpenAI counts 3-4 per message)
BOUND_BASE = 16              # reply priming and the wrapper of the whole conversation
BOUND_TOOLS = 1024           # a provider's tool-use system prompt (Anthropic: 300-500)


@dataclass(frozen=True, slots=True)
class InputSize:
    """`estimate` and the text part of the bound; `images` are the (width, height) of each
    image (None when unreadable), priced per model by `bound`."""

    estimate: int
    text_bound: int
    images: tuple[tuple[int, int] | None, ...] = ()

    def bound(self, model: str = "") -> int:
        return self.text_bound + sum(image_token_bound(size, model) for size in self.images)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Estimated prompt tokens of a chat, Anthropic messages, embeddings or completion body."""
    return measure_input(body).estimate


def input_token_bound(body: Mapping[str, Any], model: str = "") -> int:
    """Prompt tokens no count of `body` by `model`'s provider exceeds (see `InputSize`)."""
    return measure_input(body).bound(model)


def measure_input(body: Mapping[str, Any]) -> InputSize:
    size = _Size()
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        count = len(messages)
        for message in messages:
            if isinstance(message, Mapping):
                size.content(message.get("content"))
                if message.get("tool_calls"):
                    size.text(json.dumps(message["tool_calls"], default=str))
    for field in ("system", "input", "prompt"):
        value = body.get(field)
        if field in ("input", "prompt") and isinstance(value, list) and _is_token_array(value):
            exact = _token_array_size(value)
            return InputSize(exact, exact)
        if field == "prompt" and isinstance(value, list):
            count += len(value)
        size.content(value)
    tools = False
    for field in ("tools", "functions", "response_format"):
        if body.get(field):
            size.text(json.dumps(body[field], default=str))
            tools = tools or field != "response_format"
    estimate = (math.ceil(size.chars / CHARS_PER_TOKEN) + count * TOKENS_PER_MESSAGE
                + len(size.images) * TOKENS_PER_IMAGE)
    bound = (size.bytes + count * BOUND_PER_MESSAGE + BOUND_BASE
             + (BOUND_TOOLS if tools else 0))
    return InputSize(estimate, bound, tuple(size.images))


def output_ceiling(params: Mapping[str, Any]) -> int | None:
    """A target's output ceiling: the lowest integer among its token-limit `params`."""
    values = [v for name in CEILING_FIELDS if isinstance(v := params.get(name), int)
              and not isinstance(v, bool)]
    return min(values) if values else None


def cap_output(body: Mapping[str, Any], ceiling: int,
               fields: tuple[str, ...] = ("max_tokens",)) -> dict[str, Any]:
    """`body` with every output-limit field at most `ceiling` (whichever field the provider
    honours, the ceiling holds); when it sets none, `fields` are set to the ceiling."""
    capped = dict(body)
    present = False
    for name in OUTPUT_FIELDS:
        value = capped.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            capped[name] = min(value, ceiling)
            present = True
    if not present:
        for name in fields:
            capped[name] = ceiling
    return capped


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The most output `body` lets a provider generate: the larger of its output-limit
    fields (a provider may honour either) times its choices; None if it sets no limit."""
    values = [v for name in OUTPUT_FIELDS if isinstance(v := body.get(name), int)
              and not isinstance(v, bool) and v >= 0]
    return max(values) * choices(body) if values else None


def choices(body: Mapping[str, Any]) -> int:
    """How many completions one request generates and is billed for (`n`, `best_of`)."""
    most = 1
    for name in ("n", "best_of"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            most = value
    return most


# The output-limit fields of OpenAI's APIs (chat: max_completion_tokens, its older alias
# max_tokens; Responses: max_output_tokens); a route's `params` may set the first two.
CEILING_FIELDS = ("max_completion_tokens", "max_tokens")
OUTPUT_FIELDS = (*CEILING_FIELDS, "max_output_tokens")


class _Size:
    """Running totals of one body's input: characters, UTF-8 bytes, images."""

    __slots__ = ("bytes", "chars", "images")

    def __init__(self) -> None:
        self.chars = self.bytes = 0
        self.images: list[tuple[int, int] | None] = []

    def text(self, text: str) -> None:
        self.chars += len(text)
        self.bytes += len(text.encode("utf-8", "surrogatepass"))

    def content(self, content: Any) -> None:
        """A content value: a string, or a list of parts / strings."""
        if isinstance(content, str):
            self.text(content)
            return
        if not isinstance(content, list):
            return
        for part in content:
            if isinstance(part, str):
                self.text(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind in ("image_url", "image", "input_image"):
                    self.images.append(_image_size(part))
                elif isinstance(part.get("text"), str):
                    self.text(part["text"])
                elif kind in ("tool_use", "tool_result", "function_call"):
                    self.text(json.dumps(part, default=str))


# Image tokens by the providers' documented formulas, from the image's size when it can be
# read (inline PNG, GIF or JPEG), else from each formula's maximum:
# - OpenAI tiles (GPT-4o, high detail): fit in 2048x2048, shortest side to 768, then
#   85 + 170 per 512-px tile (at most 1,445); gpt-4o-mini bills 2,833 + 5,667 per tile.
# - OpenAI patches (GPT-4.1-mini/nano, o4-mini): 32-px patches capped at 1,536, times the
#   model's multiplier (at most 2.46): at most 3,779.
# - Anthropic: width*height/750 after fitting the long edge in 1568 px and the area in
#   1.15 megapixels (about 1,600 at most).
# - Gemini: 258 for an image up to 384 px on both sides, else 258 per 768x768 tile (its
#   adapter sends only inline images, whose size is read).
IMAGE_TOKENS_UNKNOWN = 3779
_MINI_TILE_MODELS = ("gpt-4o-mini",)


def image_token_bound(size: tuple[int, int] | None, model: str = "") -> int:
    """Tokens one image of `size` (None: unknown) can cost at `model`'s provider."""
    mini = any(name in model.lower() for name in _MINI_TILE_MODELS)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return 2833 + 8 * 5667 if mini else IMAGE_TOKENS_UNKNOWN
    width, height = size
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    tiles = math.ceil(w * scale / 512) * math.ceil(h * scale / 512)
    if mini:
        return 2833 + 5667 * tiles
    patches = min(1536, math.ceil(width / 32) * math.ceil(height / 32))
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    anthropic = math.ceil(width * scale * height * scale / 750) + 1
    gemini = 258 if width <= 384 and height <= 384 else \
        258 * math.ceil(width / 768) * math.ceil(height / 768)
    return max(85 + 170 * tiles, math.ceil(patches * 2.46), anthropic, gemini)


def _image_size(part: Mapping[str, Any]) -> tuple[int, int] | None:
    """Width and height of an inline (base64) image part, else None."""
    data: Any = None
    image_url = part.get("image_url")
    if isinstance(image_url, Mapping):
        image_url = image_url.get("url")
    if isinstance(image_url, str) and image_url.startswith("data:"):
        data = image_url.partition(",")[2]
    source = part.get("source")
    if isinstance(source, Mapping) and source.get("type") == "base64":
        data = source.get("data")
    if not isinstance(data, str):
        return None
    head = data[:65536]
    try:
        return image_size(base64.b64decode(head[:len(head) // 4 * 4]))
    except (ValueError, binascii.Error):
        return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF or JPEG file."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            length = int.from_bytes(head[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return (int.from_bytes(head[i + 7:i + 9], "big"),
                        int.from_bytes(head[i + 5:i + 7], "big"))
            i += 2 + length
    return None


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and (
        isinstance(value[0], int) or (isinstance(value[0], list) and bool(value[0])
                                      and isinstance(value[0][0], int)))


def _token_array_size(value: list[Any]) -> int:
    """Embeddings input given as token ids: the count is exact."""
    return sum(len(v) if isinstance(v, list) else 1 for v in value)
