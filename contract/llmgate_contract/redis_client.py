"""How both planes reach the shared Redis: one URL (standalone, Cluster or Sentinel) → one client.

The sidecar's limit store and response cache and the operator's spend reader all call
`connect`; nothing else builds a Redis client, so topology, auth and timeouts are decided once.
Unlike the rest of the contract this module needs `redis` (both planes' extras ship it); it
holds no policy and no key layout (that is budget.py). URL forms (docs/limits.md):

- `redis://[user:pass@]host:port/db`, `rediss://…` (TLS), `unix:///path?db=N`: one server.
- `redis+cluster://[user:pass@]host:port[,host:port…]`, `rediss+cluster://…`: a Redis
  Cluster, reached through any of the listed seed nodes (database 0 only).
- `redis+sentinel://[user:pass@]host:port[,host:port…]/<master-name>[/db]`,
  `rediss+sentinel://…`: the master that the listed Sentinels name; the credentials are the
  data nodes'; `?sentinel_password=…` (and `sentinel_username`) authenticate to the Sentinels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

# isort: split
import llmgate_contract.redis_import  # noqa: F401  (first: redis-py without its OTel hook)

# isort: split
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

Topology = Literal["standalone", "cluster", "sentinel"]
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"
"""What `connect` returns; both take the same commands, scripts and pipelines used here."""

_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("standalone", False), "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
}


class RedisURLError(ValueError):
    """The URL names no topology this module knows, or is missing a part it needs."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: which topology, which nodes, which credentials."""

    topology: Topology
    url: str  # as given (standalone clients are built from it directly)
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seeds or Sentinels
    service: str = ""  # the Sentinel master name
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def describe(self) -> str:
        """The URL without credentials, for logs and /readyz."""
        where = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.topology == "cluster":
            return f"cluster {where}"
        if self.topology == "sentinel":
            return f"sentinel {where} master {self.service} db {self.db}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{':' if parts.port else ''}" \
               f"{parts.port or ''}{parts.path}"


def parse_url(url: str) -> RedisTarget:
    """Split a Redis URL into its topology and parts; RedisURLError when it cannot be used."""
    scheme = url.partition("://")[0].lower()
    if scheme not in _SCHEMES or "://" not in url:
        raise RedisURLError(f"unsupported Redis URL scheme {scheme!r}: use one of "
                            f"{', '.join(sorted(_SCHEMES))}")
    topology, tls = _SCHEMES[scheme]
    if topology == "standalone":
        return RedisTarget("standalone", url, tls=tls)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    nodes = tuple(_node(item, 26379 if topology == "sentinel" else 6379)
                  for item in hosts.split(",") if item)
    if not nodes:
        raise RedisURLError(f"a {topology} URL needs at least one host:port")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if topology == "cluster":
        if segments not in ([], ["0"]):
            raise RedisURLError("Redis Cluster has only database 0")
        return RedisTarget("cluster", url, tls=tls, nodes=nodes, username=username,
                           password=password)
    if not segments or len(segments) > 2:
        raise RedisURLError("a Sentinel URL needs the master name as its path: "
                            "redis+sentinel://host:26379/<master-name>[/db]")
    db = _int(segments[1], "database") if len(segments) == 2 else 0
    return RedisTarget("sentinel", url, tls=tls, nodes=nodes, service=segments[0], db=db,
                       username=username, password=password,
                       sentinel_username=query.get("sentinel_username"),
                       sentinel_password=query.get("sentinel_password"))


def connect(url: str, *, decode_responses: bool, timeout: float, max_connections: int = 64,
            password: str | None = None) -> RedisClient:
    """A client for `url` whose every connect, command and wait for a pooled connection is
    bounded by `timeout` seconds. `password`, when given, overrides the URL's.

    Every topology waits (up to `timeout`) when `max_connections` commands are in flight,
    since a pool that raises "Too many connections" under a burst looks like an outage and
    would push admits onto local limits. The Cluster client follows MOVED/ASK itself."""
    target = parse_url(url)
    common: dict[str, Any] = {
        "decode_responses": decode_responses, "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if target.topology == "standalone":
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout,
            **common, **({"password": password} if password else {}))
        return aioredis.Redis.from_pool(pool)
    auth: dict[str, Any] = {"username": target.username,
                            "password": password or target.password}
    if target.topology == "cluster":
        return _BoundedCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                               ssl=target.tls, max_connections=max_connections,
                               wait_timeout=timeout, **auth, **common)
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs={
        "username": target.sentinel_username, "password": target.sentinel_password,
        "ssl": target.tls, "socket_timeout": timeout, "socket_connect_timeout": timeout})
    client: aioredis.Redis = sentinel.master_for(
        target.service, redis_class=_SentinelMaster, connection_pool_class=_BlockingSentinelPool,
        db=target.db, ssl=target.tls, max_connections=max_connections, timeout=timeout,
        **auth, **common)
    return client


def slot_of(client: RedisClient) -> Callable[[str], int] | None:
    """For a Redis Cluster client, the hash slot of a key (one command or script may only
    touch keys of one slot, so batches are split by it); None for every other topology."""
    if isinstance(client, RedisCluster):
        return lambda key: key_slot(key.encode())
    return None


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, secret = userinfo.partition(":")
    return (unquote(user) or None), (unquote(secret) if colon else None)


def _node(item: str, default_port: int) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = port, str(default_port)
    host = host.strip("[]")
    if not host:
        raise RedisURLError(f"no host in {item!r}")
    return host, _int(port, "port")


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RedisURLError(f"{what} must be a number, not {text!r}") from None
    if value < 0:
        raise RedisURLError(f"{what} must not be negative")
    return value


class _BoundedCluster(RedisCluster):
    """RedisCluster whose commands wait for one of `max_connections` slots: its node pools
    raise MaxConnectionsError when full instead of waiting, as the other pools do."""

    def __init__(self, *, wait_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._in_flight = asyncio.Semaphore(max_connections)
        self._wait_timeout = wait_timeout

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_timeout):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel-managed pool (asks the Sentinels for the master, drops connections to a
    demoted one) that waits for a free connection instead of raising, as standalone does."""


class _SentinelMaster(aioredis.Redis):
    """The master's client that also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()
