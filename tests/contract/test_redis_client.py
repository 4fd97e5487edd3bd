"""The Redis URL forms both planes accept (llmgate_contract.redis_client), parsed without a
server: which topology, which nodes, which credentials, and the errors for URLs that cannot
work. The clients they build are exercised against real servers in the store, cache, spend
and Sentinel tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llmgate_contract.budget import budget_key, key_scope, keys_for
from llmgate_contract.redis_client import RedisURLError, connect, parse_url
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot


def test_standalone_urls_pass_through_unchanged() -> None:
    for url in ("redis://127.0.0.1:6379/3", "rediss://:pw@cache:6380/0",
                "unix:///run/redis.sock?db=2"):
        target = parse_url(url)
        assert target.topology == "standalone" and target.url == url
    assert parse_url("rediss://h:1/0").tls


def test_cluster_url_lists_seed_nodes_and_credentials() -> None:
    target = parse_url("rediss+cluster://app:s%40cret@a:7000,b:7001,[::1]:7002,c")
    assert target.topology == "cluster" and target.tls
    assert target.nodes == (("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379))
    assert (target.username, target.password) == ("app", "s@cret")
    assert "s@cret" not in target.describe() and "a:7000" in target.describe()


def test_sentinel_url_names_the_master_database_and_sentinel_auth() -> None:
    target = parse_url("redis+sentinel://:pw@s1,s2:26380/mymaster/4"
                       "?sentinel_password=spw&sentinel_username=watch")
    assert target.topology == "sentinel" and not target.tls
    assert target.nodes == (("s1", 26379), ("s2", 26380))
    assert (target.service, target.db, target.password) == ("mymaster", 4, "pw")
    assert (target.sentinel_username, target.sentinel_password) == ("watch", "spw")
    assert parse_url("redis+sentinel://s1/m").db == 0


@pytest.mark.parametrize(("url", "message"), [
    ("http://h:6379", "unsupported Redis URL scheme"),
    ("localhost:6379", "unsupported Redis URL scheme"),
    ("redis+cluster://h:7000/2", "only database 0"),
    ("redis+cluster:///", "at least one host"),
    ("redis+sentinel://s1:26379", "master name"),
    ("redis+sentinel://s1:26379/m/x", "database must be a number"),
    ("redis+sentinel://s1:port/m", "port must be a number"),
])
def test_unusable_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(RedisURLError, match=message):
        parse_url(url)


async def test_connect_builds_the_client_of_each_topology() -> None:
    """No server needed: building a client connects lazily."""
    standalone = connect("redis://127.0.0.1:1/0", decode_responses=True, timeout=0.1)
    cluster = connect("redis+cluster://127.0.0.1:1", decode_responses=True, timeout=0.1)
    sentinel = connect("redis+sentinel://127.0.0.1:1/m", decode_responses=True, timeout=0.1)
    try:
        assert isinstance(standalone, Redis) and isinstance(cluster, RedisCluster)
        assert isinstance(sentinel, Redis)
        assert sentinel.connection_pool.service_name == "m"  # type: ignore[attr-defined]
    finally:
        for client in (standalone, cluster, sentinel):
            await client.aclose()


DNS_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)


@given(namespace=DNS_LABEL, name=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?",
                                               fullmatch=True))
def test_every_key_of_one_virtual_key_is_in_one_cluster_slot(namespace: str, name: str) -> None:
    """The admit/settle/spend scripts touch all of `keys_for` in one call: Redis Cluster
    runs a script only when every key is in one slot (Kubernetes names hold no braces, so
    the hash tag is always the whole scope)."""
    keys = keys_for(key_scope(namespace, name))
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert budget_key(key_scope(namespace, name)) in keys
