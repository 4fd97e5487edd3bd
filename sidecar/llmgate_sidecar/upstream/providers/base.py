"""The one interface every provider implements: a pure translator, no I/O.

An `Adapter` turns an OpenAI-shaped chat request into an `UpstreamRequest`, an upstream
response body back into an OpenAI `chat.completion`, upstream stream events into OpenAI
`chat.completion.chunk`s (a `StreamDecoder` per stream), and an upstream error into a
classified `UpstreamError`. What a kind supports beyond chat is declared by every adapter,
from the kind's row in the contract (`llmgate_contract.providers.KINDS`): `embeddings` (the
adapter's `EmbeddingsAdapter` side, OpenAI `/v1/embeddings` in and out, or None) and
`passthrough` (its `PassthroughAdapter` side for other OpenAI paths, or None); `prepare` is
the I/O it needs before translating (a token refresh), a no-op for most. Routing and the
transports own all network I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from llmgate_contract.config import Provider, Target

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.wire.sse import Event


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class Usage:
    """Token counts of one answer in OpenAI's terms: `prompt_tokens` is every input token,
    of which `cached_tokens` were read from the provider's prompt cache and
    `cache_write_tokens` were written to it (each priced apart, see config.pricing)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    known: bool = False
    # The part of cache_write_tokens written to Claude's 1-hour cache (priced higher);
    # only for pricing, no OpenAI field carries it.
    cache_write_1h_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Read OpenAI's usage object; cache writes from `prompt_tokens_details.
        cache_write_tokens` (how llmgate reports them), cache reads also from DeepSeek's
        `prompt_cache_hit_tokens`."""
        if not isinstance(usage, Mapping):
            return cls()
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, Mapping) else {}
        return cls(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                   completion_tokens=int(usage.get("completion_tokens") or 0),
                   cached_tokens=int(details.get("cached_tokens")
                                     or usage.get("prompt_cache_hit_tokens") or 0),
                   cache_write_tokens=int(details.get("cache_write_tokens") or 0),
                   known=True)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's usage object; cache writes, which OpenAI has no field for, as
        `prompt_tokens_details.cache_write_tokens` when there were any."""
        details = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            details["cache_write_tokens"] = self.cache_write_tokens
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": details}


def checked(usage: Usage | None) -> Usage | None:
    """`usage` as an upstream reported it, or `malformed` when a count is negative: counts
    drive spend and limits, and a negative one is a broken upstream, not a refund."""
    if usage is not None and min(usage.prompt_tokens, usage.completion_tokens,
                                 usage.cached_tokens, usage.cache_write_tokens) < 0:
        raise UpstreamError("malformed", "malformed upstream payload: usage has a negative "
                                         "token count")
    return usage


@dataclass(slots=True)
class StreamItem:
    """What a decoder made of one upstream event: bytes for the client, and what it learnt."""

    downstream: bytes = b""
    usage: Usage | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """Secret values of one provider, read from the credentials volume. Never logged."""

    api_key: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def secret_values(self) -> tuple[str, ...]:
        """Every secret string, longest first, for scrubbing text that left the upstream."""
        values = {v for v in (self.api_key, *self.extra.values()) if v and len(v) >= 6}
        return tuple(sorted(values, key=len, reverse=True))


class StreamDecoder(Protocol):
    def feed(self, event: Event) -> StreamItem:
        """Translate one upstream event; raise UpstreamError for an in-band error."""

    def finish(self) -> StreamItem:
        """The upstream stream ended; raise UpstreamError if it ended too early."""


class Adapter(Protocol):
    provider: Provider

    @property
    def counter(self) -> TokenCounter | None:
        """Exact token counting upstream; None: `/v1/messages/count_tokens` estimates."""

    @property
    def embeddings(self) -> EmbeddingsAdapter | None:
        """The embeddings side; None when the kind has no embeddings API."""

    @property
    def passthrough(self) -> PassthroughAdapter | None:
        """The pass-through side; None when the kind serves no other OpenAI path."""

    async def prepare(self) -> None:
        """I/O needed before the next translation (e.g. an OAuth token refresh)."""

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest: ...

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        """Upstream 2xx body -> (OpenAI chat.completion JSON bytes, usage)."""

    def stream_decoder(self, target: Target, *, include_usage: bool) -> StreamDecoder: ...

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError: ...


class EmbeddingsAdapter(Protocol):
    """The embeddings half of an adapter: OpenAI's embeddings request and response shapes."""

    def inputs_per_request(self, target: Target) -> int | None:
        """How many inputs one upstream request may carry for `target`'s model (None: all);
        the API layer splits a longer `input` into that many requests and joins the
        answers."""

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        """`body` is an OpenAI embeddings request (`input` already a list of strings)."""

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        """Upstream 2xx body -> (OpenAI embeddings list JSON bytes, usage: input only)."""


class CountInput(Protocol):
    """What `/v1/messages/count_tokens` asks to count, in the shapes counters read."""

    @property
    def messages(self) -> Mapping[str, Any]:
        """The Anthropic Messages count body as it came."""

    def chat(self) -> dict[str, Any]:
        """The same request as the OpenAI chat body `/v1/messages` would route (built on
        first use; what it cannot translate is the same `BadRequest` as there)."""


class TokenCounter(Protocol):
    """The token-counting side of an adapter: the upstream's own count of the input tokens
    a Messages request would be billed for."""

    @property
    def estimate_when_refused(self) -> bool:
        """True: a `badRequest` answer (or a request it cannot translate) means the upstream
        cannot count this request or model, and the API layer answers its estimate; False:
        such an answer is the client's mistake and goes back as an error."""

    def counts(self, target: Target) -> bool:
        """Whether the upstream can count for `target`'s model at all (False: the API layer
        estimates without asking)."""

    def count_tokens_request(self, request: CountInput, target: Target) -> UpstreamRequest:
        ...

    def count_tokens_response(self, payload: bytes, target: Target) -> int:
        """Upstream 2xx body -> the input token count (malformed: an UpstreamError)."""


class PassthroughAdapter(Protocol):
    """The pass-through half of an adapter: other OpenAI paths, bodies forwarded as is."""

    @property
    def operations(self) -> frozenset[str]:
        """The paths under /v1/ it serves (`Kind.passthrough`)."""

    def raw_request(self, operation: str, body: bytes, content_type: str,
                    target: Target) -> UpstreamRequest: ...


def retry_after_seconds(headers: Mapping[str, str], *,
                        now: datetime | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
