"""`llmgate operator`: runs the kopf reconciler, the ops port and the admission webhook.

`llmgate_cli` calls `run(settings)`; tests drive `serve(...)` with an explicit API server.
Owns start-up order and shutdown: ops server first (so probes answer), then the webhook
(with its TLS certificate, kept in a Secret and the MWC `caBundle`), then kopf until a
signal or the stop flag. No kopf import here (that is `handlers`), no API calls (`kube`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from llmgate_operator import certs, handlers, ops, webhook_server
from llmgate_operator.injection import SidecarOptions
from llmgate_operator.keys import MANAGED_BY, MANAGED_BY_LABEL
from llmgate_operator.kube import Conflict, Connection, Kube, KubeError
from llmgate_operator.reconcile import Reconciler
from llmgate_operator.settings import OperatorSettings, add_arguments, from_args
from llmgate_operator.spend import SpendReader, SpendTracker

log = logging.getLogger(__name__)
TLS_CHECK_SECONDS = 60.0
NATIVE_SIDECAR_MINOR = 29  # restartPolicy: Always init containers are on by default since 1.29


def run(settings: OperatorSettings) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 when start-up failed."""
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except (KubeError, OSError, ValueError) as exc:
        log.error("llmgate operator could not start: %s", exc)
        return 1
    return 0


async def serve(settings: OperatorSettings, *, connection: Connection | None = None,
                stop_flag: Any = None, ready_flag: Any = None) -> None:
    """Everything the operator runs, until `stop_flag` is set (or a signal arrives)."""
    kube = Kube.for_connection(connection) if connection else Kube.from_environment()
    metrics = ops.OperatorMetrics()
    health = ops.Health()
    health.wait_for("reconciler")
    reader = (SpendReader.from_url(settings.redis_url, password=settings.redis_password)
              if settings.redis_url else None)
    runtime = handlers.OperatorRuntime(
        reconciler=Reconciler(kube, observer=metrics,
                              spend=SpendTracker(reader, observer=metrics),
                              sidecar_image=settings.sidecar_image,
                              grant_role=settings.namespace_role,
                              redis_password=settings.redis_password),
        connection=connection, namespaces=settings.namespaces,
        resync_seconds=settings.resync_seconds, spend_seconds=settings.spend_seconds,
        peering=settings.peering)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(kube.aclose)
        if reader is not None:
            stack.push_async_callback(reader.aclose)
        ops_runner = await ops.start(health, metrics.registry, host=settings.ops_host,
                                     port=settings.ops_port)
        stack.push_async_callback(ops_runner.cleanup)
        if settings.webhook_enabled:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmgate-tls-"))
            webhook = await start_webhook(settings, kube, metrics.registry, Path(workdir))
            stack.push_async_callback(webhook.cleanup)
            if not settings.tls_dir:
                keeper = asyncio.create_task(_keep_tls(settings, kube, webhook, Path(workdir)))
                stack.push_async_callback(_cancel, keeper)
        kopf_ready = asyncio.Event()
        relay = asyncio.create_task(_relay_ready(kopf_ready, health, ready_flag))
        stack.push_async_callback(_cancel, relay)
        await handlers.run_operator(runtime, stop_flag=stop_flag, ready_flag=kopf_ready)


async def _relay_ready(kopf_ready: asyncio.Event, health: ops.Health, ready_flag: Any) -> None:
    await kopf_ready.wait()
    health.ready("reconciler")
    if ready_flag is not None:
        ready_flag.set()


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- the admission webhook ---------------------------------------------------------------------

async def start_webhook(settings: OperatorSettings, kube: Kube, registry: CollectorRegistry,
                        workdir: Path) -> web.AppRunner:
    """TLS material in place, then the HTTPS server for `/mutate-pods`."""
    if settings.tls_dir:
        certfile, keyfile = (str(Path(settings.tls_dir) / "tls.crt"),
                             str(Path(settings.tls_dir) / "tls.key"))
    else:
        material = await ensure_tls(settings, kube, now=datetime.now(UTC))
        certfile, keyfile = _write_tls_files(material, workdir)
    options = SidecarOptions(
        image=settings.sidecar_image, redis_url=settings.sidecar_redis_url,
        cache_redis_url=settings.sidecar_cache_redis_url,
        redis_auth=bool(settings.redis_password),
        resources=dict(settings.sidecar_resources) if settings.sidecar_resources else None,
        native=await native_sidecars(kube))
    return await webhook_server.start(options, host=settings.webhook_host,
                                      port=settings.webhook_port, certfile=certfile,
                                      keyfile=keyfile, registry=registry)


def _webhook_namespace(settings: OperatorSettings) -> str:
    if not settings.webhook_namespace:
        raise ValueError("the webhook needs --webhook-namespace (or POD_NAMESPACE), "
                         "or --tls-dir, or --no-webhook")
    return settings.webhook_namespace


async def ensure_tls(settings: OperatorSettings, kube: Kube, *,
                     now: datetime) -> certs.TlsMaterial:
    """The certificate from the TLS Secret, issued (or renewed) there first when needed."""
    namespace = _webhook_namespace(settings)
    service = settings.webhook_service
    hosts = webhook_hosts(settings)
    secret = await kube.read_secret(namespace, settings.tls_secret)
    material = certs.from_secret_data(secret.get("data")) if secret else None
    if material is not None and not certs.needs_renewal(material, now=now, service=service,
                                                        namespace=namespace, hosts=hosts):
        await _publish_ca(settings, kube, material)
        return material
    fresh = certs.issue(service, namespace, now=now, hosts=hosts)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": settings.tls_secret, "namespace": namespace,
                         "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "data": certs.to_secret_data(fresh)}
    if secret is None:
        try:
            await kube.create_secret(namespace, body)
        except Conflict:
            # Another replica issued it first: use theirs, so both serve the same CA.
            theirs = await kube.read_secret(namespace, settings.tls_secret)
            fresh = certs.from_secret_data((theirs or {}).get("data")) or fresh
    else:
        await kube.patch_object(namespace, "secrets", settings.tls_secret,
                                {"data": body["data"]})
    log.info("webhook certificate issued for %s.%s.svc", service, namespace)
    await _publish_ca(settings, kube, fresh)
    return fresh


def webhook_hosts(settings: OperatorSettings) -> tuple[str, ...]:
    """The host of `--webhook-url` (the certificate must name it), besides the Service's."""
    host = urlsplit(settings.webhook_url).hostname if settings.webhook_url else None
    return (host,) if host else ()


async def _publish_ca(settings: OperatorSettings, kube: Kube,
                      material: certs.TlsMaterial) -> None:
    bundle = base64.b64encode(material.ca_pem.encode()).decode()
    try:
        if await kube.patch_ca_bundle(settings.webhook_config_name, bundle):
            log.info("caBundle of %s updated", settings.webhook_config_name)
    except KubeError as exc:
        log.warning("could not update caBundle of %s: %s", settings.webhook_config_name, exc)


def _write_tls_files(material: certs.TlsMaterial, workdir: Path) -> tuple[str, str]:
    certfile, keyfile = workdir / "tls.crt", workdir / "tls.key"
    certfile.write_text(material.cert_pem)
    keyfile.touch(mode=0o600)
    keyfile.write_text(material.key_pem)
    return str(certfile), str(keyfile)


async def _keep_tls(settings: OperatorSettings, kube: Kube, runner: web.AppRunner,
                    workdir: Path) -> None:
    """Renew before expiry, follow renewals by other replicas, re-publish the caBundle."""
    served = (workdir / "tls.crt").read_text()
    while True:
        await asyncio.sleep(TLS_CHECK_SECONDS)
        try:
            material = await ensure_tls(settings, kube, now=datetime.now(UTC))
        except KubeError as exc:
            log.warning("webhook certificate check failed: %s", exc)
            continue
        if material.cert_pem != served:
            certfile, keyfile = _write_tls_files(material, workdir)
            webhook_server.reload_tls(runner, certfile, keyfile)
            served = material.cert_pem
            log.info("webhook certificate reloaded")


async def native_sidecars(kube: Kube) -> bool:
    """Native sidecars (init containers that keep running) from Kubernetes 1.29 on."""
    try:
        version = await kube.server_version()
    except KubeError as exc:
        log.warning("cannot read the server version (%s); assuming native sidecars", exc)
        return True
    major = re.match(r"\d+", str(version.get("major", "")))
    minor = re.match(r"\d+", str(version.get("minor", "")))
    if not major or not minor:
        return True
    return (int(major.group()), int(minor.group())) >= (1, NATIVE_SIDECAR_MINOR)


def main(argv: list[str] | None = None) -> int:
    """`python -m llmgate_operator.main [flags]` (the CLI's `llmgate operator` does the same)."""
    parser = argparse.ArgumentParser(prog="llmgate operator")
    add_arguments(parser)
    try:
        settings = from_args(parser.parse_args(argv))
    except ValueError as exc:
        parser.error(str(exc))
    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
