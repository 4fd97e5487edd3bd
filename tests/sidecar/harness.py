"""Run the real sidecar app on loopback from CRs, the way a pod would see them.

CRs (+ Secrets) are compiled with the operator's `compile_namespace`, written as the two
mounted volumes, and served by `create_app` on a free port; tests talk to it over HTTP with
the official SDKs. `Gateway.apply` rewrites the volumes for hot-reload tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from llmgate_contract import bundle_files
from llmgate_operator.compile import compile_namespace
from llmgate_sidecar.api.state import ACCOUNTANT, CONFIG, METRICS
from llmgate_sidecar.app import api_runner, create_app, create_ops_app
from llmgate_sidecar.settings import SidecarSettings

KEY = "lg-test-key-0123456789"


def write_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for name, text in files.items():
        (directory / name).write_text(text)


def compile_to(root: Path, resources: list[dict[str, Any]],
               secrets: dict[str, dict[str, str]]) -> str:
    result = compile_namespace("default", resources, secrets, now=datetime.now(UTC))
    config_data, secret_data = bundle_files(result.config, result.credentials)
    write_files(root / "credentials", secret_data)
    write_files(root / "config", config_data)
    return result.config.generation


def provider(name: str, kind: str = "openai-compatible", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
            "metadata": {"name": name}, "spec": {"provider": kind, **spec}}


def route(name: str, targets: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": name}, "spec": {"targets": targets, **spec}}


def virtual_key(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": name}, "spec": spec}


@dataclass
class Gateway:
    root: Path
    app: web.Application
    runner: web.AppRunner
    ops_runner: web.AppRunner
    url: str
    ops_url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def apply(self, resources: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> str:
        generation = compile_to(self.root, resources, secrets)
        self.app[CONFIG].load()
        return generation

    @property
    def metrics(self) -> Any:
        return self.app[METRICS]

    async def spend(self, key: str = "team") -> tuple[Decimal, Decimal]:
        """The key's spend and in-flight reservations in the period, read from the store."""
        runtime = self.app[CONFIG].current
        assert runtime is not None
        status = await self.app[ACCOUNTANT].limiter.spend(runtime.keys_by_name[key],
                                                          namespace=runtime.namespace)
        return status.spent, status.reserved

    async def settled(self, key: str = "team") -> tuple[Decimal, Decimal]:
        """The key's spend once nothing is reserved (settlement may run in a task)."""
        for _ in range(300):
            spent, reserved = await self.spend(key)
            if reserved == 0:
                return spent, reserved
            await asyncio.sleep(0.01)
        raise AssertionError("the reservation was never settled")

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.ops_runner.cleanup()


async def start_gateway(root: Path, resources: list[dict[str, Any]],
                        secrets: dict[str, dict[str, str]] | None = None,
                        store: Any = None, **settings: Any) -> Gateway:
    secrets = {"team-key": {"api-key": KEY}, **(secrets or {})}
    compile_to(root, resources, secrets)
    config = SidecarSettings(config_dir=str(root / "config"),
                             credentials_dir=str(root / "credentials"),
                             reload_interval=0.05, **settings)
    app = create_app(config, store=store)
    runner = api_runner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ops_runner = web.AppRunner(create_ops_app(app), access_log=None)
    await ops_runner.setup()
    ops_site = web.TCPSite(ops_runner, "127.0.0.1", 0)
    await ops_site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ops_port = ops_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Gateway(root, app, runner, ops_runner, f"http://127.0.0.1:{port}",
                   f"http://127.0.0.1:{ops_port}")
