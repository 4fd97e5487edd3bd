"""Exact-match response cache: request keys, plans, entries, stream recording and replay.

The request handler asks `ResponseCache.plan(...)` once per request, then `lookup(plan)`
before routing; on a miss it stores the answer with `store_json(plan, payload)` or feeds a
stream through `recorder(plan)`. Only complete, successful answers are stored. A backend
failure is a miss (counted), never a failed request. No HTTP here: the handler writes hits.
The backends (memory LRU, Redis) are in `cache_backends`.
"""


from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from llmgate_contract.config import Group, Route

from llmgate_sidecar.cache.backends import CacheBackend
from llmgate_sidecar.upstream.providers.base import StreamItem, Usage
from llmgate_sidecar.wire.sse import DONE, SSEParser

log = logging.getLogger("llmgate.cache")

CACHE_HEADER = "x-llmgate-cache"
KEY_VERSION = 1
# Request fields that never change the answer: transport (stream_options: usage is replayed
# to match the asking client), attribution and storage hints. Everything else is keyed,
# including fields this code does not know: an unknown parameter may change the output.
IGNORED_FIELDS = frozenset({"stream_options", "user", "metadata", "store", "safety_identifier",
                            "prompt_cache_key", "prompt_cache_retention"})
COMPRESS_ABOVE = 1024
_RAW, _ZLIB = b"J", b"Z"


Mode = Literal["use", "refresh", "bypass"]


def directive(headers: Mapping[str, str]) -> Mode:
    """What the client asked of the cache: `x-llmgate-cache: bypass|no-store` skips read and
    write; `refresh` or `Cache-Control: no-cache` skips the read only."""
    own = headers.get(CACHE_HEADER, "").strip().lower()
    if own in ("bypass", "no-store"):
        return "bypass"
    control = {d.strip().lower() for d in headers.get("Cache-Control", "").split(",")}
    if "no-store" in control:
        return "bypass"
    if own == "refresh" or "no-cache" in control:
        return "refresh"
    return "use"


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's cache decision: the key, the TTL, whether to read and to write, and the
    `x-llmgate-cache` response header for an answer that was not a hit."""

    key: str
    ttl: float
    read: bool
    write: bool
    header: Literal["miss", "refresh", "bypass", "off"]


NO_CACHE = Plan(key="", ttl=0.0, read=False, write=False, header="off")
BYPASS = Plan(key="", ttl=0.0, read=False, write=False, header="bypass")
HIT_HEADER = "hit"


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored answer: a JSON completion body, or a stream's chunk payloads (JSON text,
    `[DONE]` excluded) plus the usage-only chunk if the recorded client asked for one."""

    kind: Literal["json", "stream"]
    body: bytes = b""
    chunks: tuple[str, ...] = ()
    usage_chunk: str | None = None
    usage: Mapping[str, Any] | None = None

    def encode(self) -> bytes:
        raw = orjson.dumps({"v": KEY_VERSION, "k": self.kind, "b": self.body.decode(),
                            "c": list(self.chunks), "uc": self.usage_chunk, "u": self.usage})
        if len(raw) > COMPRESS_ABOVE:
            return _ZLIB + zlib.compress(raw, 1)
        return _RAW + raw

    @classmethod
    def decode(cls, blob: bytes) -> Entry | None:
        """None for anything unreadable (a foreign or older value is just a miss)."""
        if blob[:1] not in (_RAW, _ZLIB):
            return None
        try:
            raw = zlib.decompress(blob[1:]) if blob[:1] == _ZLIB else blob[1:]
            data = orjson.loads(raw)
            if data.get("v") != KEY_VERSION or data.get("k") not in ("json", "stream"):
                return None
            return cls(kind=data["k"], body=data["b"].encode(), chunks=tuple(data["c"]),
                       usage_chunk=data["uc"], usage=data["u"])
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry

    @property
    def model(self) -> str:
        """The upstream model that produced the stored answer (for the response header)."""
        source = self.entry.body if self.entry.kind == "json" else (
            self.entry.chunks[0] if self.entry.chunks else b"{}")
        try:
            value = orjson.loads(source).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return "unknown"
        return value if isinstance(value, str) else "unknown"

    @property
    def usage(self) -> Usage:
        """What the original answer used (for metrics; a hit costs nothing)."""
        if self.entry.kind == "json":
            return Usage.from_openai(orjson.loads(self.entry.body).get("usage"))
        return Usage.from_openai(self.entry.usage)

    def sse(self, *, include_usage: bool) -> Iterator[bytes]:
        """The stream's events, as the recorded upstream sent them, then `[DONE]`.

        The usage-only chunk is replayed when the asking client wants it (synthesised from
        the recorded usage if the recording client did not ask for it), and left out if not.
        """
        for chunk in self.entry.chunks:
            yield b"data: " + chunk.encode() + b"\n\n"
        if include_usage:
            usage_chunk = self.entry.usage_chunk or self._usage_chunk()
            if usage_chunk is not None:
                yield b"data: " + usage_chunk.encode() + b"\n\n"
        yield DONE

    def _usage_chunk(self) -> str | None:
        if self.entry.usage is None or not self.entry.chunks:
            return None
        first = orjson.loads(self.entry.chunks[0])
        return orjson.dumps({key: first.get(key) for key in ("id", "object", "created",
                                                             "model", "system_fingerprint")
                             if key in first} | {"choices": [], "usage": self.entry.usage}
                            ).decode()


def complete_json(payload: bytes) -> bool:
    """A chat completion worth storing: every choice finished, no in-band error."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(body, dict) or "error" in body:
        return False
    choices = body.get("choices")
    return (isinstance(choices, list) and bool(choices)
            and all(isinstance(c, dict) and c.get("finish_reason") for c in choices))


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    not_stored: int = 0  # incomplete or failed answers, never stored


@dataclass
class Recorder:
    """Collects a stream's downstream chunks as they pass; `finish()` stores the stream if it
    was complete ([DONE] seen, every choice finished, no error event)."""

    cache: ResponseCache
    plan: Plan
    limit_bytes: int
    chunks: list[str] = field(default_factory=list)
    usage_chunk: str | None = None
    usage: Usage | None = None
    _parser: SSEParser = field(default_factory=SSEParser)
    _open: set[int] = field(default_factory=set)
    _done: bool = False
    _failed: bool = False
    _size: int = 0

    def feed(self, item: StreamItem) -> None:
        if item.usage is not None:
            self.usage = item.usage
        if self._failed or not item.downstream:
            return
        for event in self._parser.feed(item.downstream):
            self._event(event.event, event.data)

    def _event(self, name: str, data: str) -> None:
        if data == "[DONE]":
            self._done = True
            return
        self._size += len(data)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if (name == "error" or not isinstance(chunk, dict) or "error" in chunk
                or self._done or self._size > self.limit_bytes):
            self._failed = True
            return
        choices = chunk.get("choices")
        if not choices and chunk.get("usage"):
            self.usage_chunk = data
            return
        for choice in choices or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                if choice.get("finish_reason"):
                    self._open.discard(index)
                else:
                    self._open.add(index)
        self.chunks.append(data)

    @property
    def complete(self) -> bool:
        return self._done and not self._failed and not self._open and bool(self.chunks)

    async def finish(self) -> bool:
        """Store the stream if complete; True if it was stored. Never raises."""
        if not self.complete:
            self.cache.stats.not_stored += 1
            return False
        usage = _usage_json(self.usage)
        entry = Entry("stream", chunks=tuple(self.chunks), usage_chunk=self.usage_chunk,
                      usage=usage)
        return await self.cache.write(self.plan, entry)


def _usage_json(usage: Usage | None) -> dict[str, Any] | None:
    return usage.to_openai() if usage is not None and usage.known else None


class ResponseCache:
    """The cache the handler talks to; one per app, over one backend."""

    def __init__(self, backend: CacheBackend, *, max_entry_bytes: int = 4 * 1024 * 1024) -> None:
        self.backend = backend
        self.max_entry_bytes = max_entry_bytes
        self.stats = CacheStats()
        self._groups: dict[int, tuple[Group, str]] = {}

    def plan(self, route: Route, body: Mapping[str, Any], *, namespace: str, key_name: str,
             metadata: Mapping[str, str], headers: Mapping[str, str],
             group: Group | None = None, api: str = "chat") -> Plan:
        """What to do for this request (NO_CACHE / BYPASS when there is nothing to do).

        `body` is what will be sent upstream (after guardrails); `group` is the target group
        the rules selected (default: the route's), so a config change of the targets starts
        from an empty cache; `metadata` is the request's metadata for `metadata.<k>`; `api`
        names the inbound API, so equal bodies on different APIs never share an answer.
        """
        if route.cache.mode != "exact" or route.cache.ttl <= 0:
            return NO_CACHE
        mode = directive(headers)
        if mode == "bypass":
            return BYPASS
        partition = partition_values(route.cache.partition_by, namespace=namespace,
                                     key_name=key_name, metadata=metadata)
        key = request_key(body, partition=partition, api=api,
                          targets=self._fingerprint(group or route.group))
        return Plan(key=key, ttl=route.cache.ttl, read=mode == "use", write=True,
                    header="miss" if mode == "use" else "refresh")

    async def lookup(self, plan: Plan, *, stream: bool = False) -> Hit | None:
        """The stored answer for this plan, or None (also on backend errors)."""
        if not plan.read:
            return None
        blob = await self.backend.get(plan.key)
        entry = Entry.decode(blob) if blob is not None else None
        if entry is None or entry.kind != ("stream" if stream else "json"):
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return Hit(entry)

    async def store_json(self, plan: Plan, payload: bytes) -> bool:
        """Store a non-streamed completion if it is complete; True if stored. Never raises."""
        if not plan.write:
            return False
        if not complete_json(payload):
            self.stats.not_stored += 1
            return False
        return await self.write(plan, Entry("json", body=payload))

    def recorder(self, plan: Plan) -> Recorder | None:
        """A recorder to feed every StreamItem of the answer to; None if nothing to store."""
        if not plan.write:
            return None
        return Recorder(self, plan, self.max_entry_bytes)

    async def write(self, plan: Plan, entry: Entry) -> bool:
        blob = entry.encode()
        if len(blob) > self.max_entry_bytes:
            self.stats.not_stored += 1
            return False
        await self.backend.set(plan.key, blob, plan.ttl)
        self.stats.stores += 1
        return True

    def _fingerprint(self, group: Group) -> str:
        # Computed once per config object (id kept valid by holding the object); bounded.
        entry = self._groups.get(id(group))
        if entry is not None and entry[0] is group:
            return entry[1]
        digest = hashlib.sha256(group.to_json().encode()).hexdigest()[:16]
        if len(self._groups) >= 1024:
            self._groups.pop(next(iter(self._groups)))
        self._groups[id(group)] = (group, digest)
        return digest

    async def aclose(self) -> None:
        await self.backend.aclose()


def partition_values(partition_by: list[str], *, namespace: str, key_name: str,
                     metadata: Mapping[str, str]) -> list[str | None]:
    """The values that separate cache partitions, in configured order (None: absent)."""
    values: list[str | None] = []
    for part in partition_by:
        if part == "virtualKey":
            values.append(f"{namespace}/{key_name}")  # key names are unique per namespace
        elif part == "namespace":
            values.append(namespace)
        elif part.startswith("metadata."):
            values.append(metadata.get(part.removeprefix("metadata.")))
        else:
            values.append(f"?{part}")
    return values


def request_key(body: Mapping[str, Any], *, partition: list[str | None],
                targets: str = "", api: str = "chat") -> str:
    """SHA-256 of the normalized request: sorted keys, fields in IGNORED_FIELDS dropped,
    `stream` as a boolean (streams and JSON bodies are stored separately)."""
    normalized = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    normalized["stream"] = bool(body.get("stream"))
    material = orjson.dumps([KEY_VERSION, api, partition, targets, normalized],
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest()
