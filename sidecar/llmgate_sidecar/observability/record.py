"""The request record: what one API request did, filled in as the request learns it.

Metrics, the log line and the span all read this one record (`observe.observed` hands it to
each at the end of a request); none of them imports another. It reads what routing and the
providers produce through the two small protocols below, so it sits below both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from llmgate_contract.config import Target

UNKNOWN = "unknown"
NONE = "none"


class TokenCounts(Protocol):
    """Token usage as an upstream reported it (`upstream.providers.base.Usage`)."""

    @property
    def known(self) -> bool: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


class CommittedAnswer(Protocol):
    """Who answered and after how many tries (`routing.router.Served`)."""

    @property
    def target(self) -> Target: ...
    @property
    def attempts(self) -> int: ...
    @property
    def fallbacks(self) -> Sequence[str]: ...


@dataclass(slots=True)
class RequestRecord:
    """What one API request did, filled in by the handler as it learns it.

    Every field is bounded or numeric: names and the key's metadata come from the config,
    `error` is an error code; nothing the client sent is stored verbatim."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    route: str = UNKNOWN
    virtual_key: str = UNKNOWN
    # The key's `spec.metadata` (the config's own mapping: shared, never copied or changed)
    key_metadata: Mapping[str, str] | None = None
    provider: str = NONE
    model: str = NONE
    status: int = 500
    status_class: str = "5xx"
    attempts: int = 0
    fallbacks: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None  # part of input_tokens
    cache_write_tokens: int | None = None  # part of input_tokens
    cost_usd: Decimal | None = None
    overhead_s: float | None = None
    error: str | None = None

    def served(self, served: CommittedAnswer) -> None:
        """The committed upstream answer (a `routing.router.Served`)."""
        self.provider, self.model = served.target.provider, served.target.model
        self.attempts, self.fallbacks = served.attempts, list(served.fallbacks)

    def answered(self, status_class: str, usage: TokenCounts | None,
                 overhead: str | float | None) -> None:
        """The response went out (`overhead`: seconds, or the header's milliseconds)."""
        self.status_class = status_class
        self.status = 499 if status_class == "499" else 200
        if status_class == "5xx":
            self.error = "upstream_stream_failed"
        if usage is not None and usage.known:
            self.input_tokens, self.output_tokens = usage.prompt_tokens, usage.completion_tokens
            self.cache_read_tokens = usage.cached_tokens
            self.cache_write_tokens = usage.cache_write_tokens
        if isinstance(overhead, str):
            self.overhead_s = float(overhead) / 1000
        elif overhead is not None:
            self.overhead_s = overhead

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):  # the client went away before an answer
            self.status, self.status_class, self.error = 499, "499", "client_disconnected"
            return
        status = getattr(exc, "status", None)
        self.status = status if isinstance(status, int) else 500
        self.status_class = f"{self.status // 100}xx"
        code = getattr(exc, "reason", None)  # llmgate's own code (GatewayError.reason)
        self.error = code if isinstance(code, str) else "internal_error"
        self.attempts = getattr(exc, "attempts", self.attempts)
