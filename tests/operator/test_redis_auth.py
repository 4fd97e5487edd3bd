"""Redis AUTH end to end: the password comes from a Secret and reaches the operator's spend
reader, each namespace's credentials Secret (never the ConfigMap), the injected sidecar's env
(valueFrom, never a literal) and the sidecar's store and cache; without it, a real
redis-server that requires a password refuses the client."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from llmgate_contract import CONFIGMAP_NAME, CREDENTIALS_SECRET_NAME, REDIS_PASSWORD_KEY
from llmgate_operator.injection import SidecarOptions, build
from llmgate_operator.spend import SpendReader
from llmgate_sidecar.cache.redis_backend import RedisBackend
from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.settings import SidecarSettings, add_arguments, from_args
from redis.exceptions import AuthenticationError, ResponseError

from tests.operator import harness as h
from tests.operator.emulator import Emu
from tests.sidecar.redis_server import RedisServer

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
async def locked_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of its own that requires PASSWORD (set once it answers PING)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = aioredis.from_url(server.url)
        await client.config_set("requirepass", PASSWORD)
        await client.aclose()
        yield server
    finally:
        server.stop()


async def test_without_the_password_redis_refuses(locked_redis: RedisServer) -> None:
    client = aioredis.from_url(locked_redis.url)
    with pytest.raises((AuthenticationError, ResponseError)):
        await client.ping()
    await client.aclose()


async def test_store_cache_and_spend_reader_authenticate(locked_redis: RedisServer) -> None:
    store = RedisStore.from_url(locked_redis.url, password=PASSWORD)
    backend = RedisBackend.from_url(locked_redis.url, password=PASSWORD)
    reader = SpendReader.from_url(locked_redis.url, password=PASSWORD)
    try:
        assert await store.client.ping()
        await backend.set("k", b"v", 30)
        assert await backend.get("k") == b"v"
        now_ms, spent = await reader.read([])
        assert now_ms > 0 and spent == []
    finally:
        await store.aclose()
        await backend.aclose()
        await reader.aclose()


def test_sidecar_reads_the_password_from_env_and_never_prints_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGATE_REDIS_PASSWORD", PASSWORD)
    parser = argparse.ArgumentParser()
    add_arguments(parser, defaults=SidecarSettings())
    settings = from_args(parser.parse_args([]))
    assert settings.redis_password == PASSWORD
    assert PASSWORD not in repr(settings)


def test_injected_sidecar_gets_the_password_from_the_credentials_secret() -> None:
    pod: dict[str, Any] = {"metadata": {"name": "app"},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    options = SidecarOptions(image="sidecar:1", redis_url="redis://redis:6379/0",
                             redis_auth=True)
    env = {e["name"]: e for e in build(pod, options).container["env"]}
    assert env["LLMGATE_REDIS_PASSWORD"] == {"name": "LLMGATE_REDIS_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": CREDENTIALS_SECRET_NAME, "key": REDIS_PASSWORD_KEY,
                         "optional": True}}}
    no_auth = build(pod, SidecarOptions(image="sidecar:1", redis_url="redis://r:6379/0"))
    assert "LLMGATE_REDIS_PASSWORD" not in {e["name"] for e in no_auth.container["env"]}


@pytest.mark.kmock(cls=Emu)
async def test_operator_puts_the_password_in_the_credentials_secret_only(k8s: Any) -> None:
    async with h.running_operator(k8s, redis_password=PASSWORD):
        await h.create(k8s, "apps", {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                                     "metadata": {"name": "k"}, "spec": {}})
        secret = await h.eventually(
            lambda: h.stored(k8s, "v1/secrets", "apps", CREDENTIALS_SECRET_NAME),
            what="the credentials Secret")
        assert h.decoded(secret)[REDIS_PASSWORD_KEY] == PASSWORD
        configmap = await h.eventually(  # written after the Secret
            lambda: h.stored(k8s, "v1/configmaps", "apps", CONFIGMAP_NAME),
            what="the ConfigMap")
        assert PASSWORD not in str(configmap)
        # What a sidecar loads from the two volumes is still one consistent bundle.
        assert h.bundle(k8s, "apps") is not None
