"""The HTTPS server in front of `webhook.decide`: `POST /mutate-pods` on port 9443.

`create_app` builds the aiohttp app (bounded bodies, metrics on the registry handed in);
`start` serves it over TLS and returns the runner the caller must `cleanup()`;
`reload_tls` swaps in a renewed certificate without a restart. Started by the operator's
`main`; no kopf imports, no Kubernetes client. Bad input gets an AdmissionReview error, never a 500.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from llmgate_operator.injection import SidecarOptions
from llmgate_operator.webhook import decide, error_response, pod_name

PATH = "/mutate-pods"
# A pod is at most ~1.5 MiB (etcd's object limit); the review wraps one, with room to spare.
MAX_BODY_BYTES = 4 * 1024 * 1024
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    duration: Histogram


class _Tls:
    """The listening context plus the current one; handshakes switch to the current one.

    A renewal builds a whole new context and swaps it in only if it loaded, so a bad pair
    of files never leaves the server with a certificate that does not match its key.
    """

    def __init__(self, certfile: str, keyfile: str) -> None:
        self.listening = server_ssl_context(certfile, keyfile)
        self.current = self.listening
        self.listening.sni_callback = self._select

    def _select(self, connection: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        if self.current is not self.listening:
            connection.context = self.current

    def reload(self, certfile: str, keyfile: str) -> None:
        renewed = server_ssl_context(certfile, keyfile)
        self.current = renewed
        # Clients that send no SNI never reach the callback: update the fallback too.
        self.listening.load_cert_chain(certfile, keyfile)


OPTIONS_KEY = web.AppKey("options", SidecarOptions)
METRICS_KEY = web.AppKey("metrics", Metrics)
TLS_KEY = web.AppKey("tls", _Tls)


def create_metrics(registry: CollectorRegistry | None) -> Metrics:
    """The webhook's metrics on `registry` (a private one if None, so tests never clash)."""
    registry = registry if registry is not None else CollectorRegistry()
    requests = Counter(
        "llmgate_operator_webhook_requests_total",
        "Pod admission reviews answered, by outcome.",
        ["result"], registry=registry)
    for result in ("injected", "skipped", "error"):
        requests.labels(result=result)     # export zeros so rate() works from the start
    duration = Histogram(
        "llmgate_operator_webhook_duration_seconds",
        "Time to answer one admission review.",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        registry=registry)
    return Metrics(requests=requests, duration=duration)


def create_app(
    options: SidecarOptions,
    *,
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    """The webhook app: `POST /mutate-pods` answering AdmissionReviews for `options`."""
    app = web.Application(client_max_size=max_body_bytes)
    app[OPTIONS_KEY] = options
    app[METRICS_KEY] = create_metrics(registry)
    app.router.add_post(PATH, _mutate_pods)
    return app


async def start(
    options: SidecarOptions,
    *,
    host: str,
    port: int,
    certfile: str,
    keyfile: str,
    registry: CollectorRegistry | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.AppRunner:
    """Serve the webhook over TLS on host:port; the caller owns (and cleans up) the runner."""
    tls = _Tls(certfile, keyfile)
    app = create_app(options, registry=registry, max_body_bytes=max_body_bytes)
    app[TLS_KEY] = tls
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls.listening).start()
    except BaseException:
        await runner.cleanup()
        raise
    _log.info("webhook serving https://%s:%s%s", host, bound_port(runner), PATH)
    return runner


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS >= 1.2) loaded with the serving certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def reload_tls(runner: web.AppRunner, certfile: str, keyfile: str) -> None:
    """Serve a renewed certificate to new connections; open ones are not disturbed.

    Raises (and keeps serving the old certificate) if the files do not load or match.
    """
    runner.app[TLS_KEY].reload(certfile, keyfile)


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful when started with port 0)."""
    return int(runner.addresses[0][1])


async def _mutate_pods(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    started = time.perf_counter()
    try:
        response, status, result = await _answer(request)
    finally:
        metrics.duration.observe(time.perf_counter() - started)
    metrics.requests.labels(result=result).inc()
    return web.json_response(response, status=status)


async def _answer(request: web.Request) -> tuple[dict[str, Any], int, str]:
    """(AdmissionReview body, HTTP status, result label) for one HTTP request."""
    if request.content_type != "application/json":
        message = f"content type must be application/json, not {request.content_type!r}"
        return error_response(message), 400, "error"
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error_response("the AdmissionReview is larger than this webhook accepts"), \
            413, "error"
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(f"the body is not valid JSON: {exc}"), 400, "error"
    decision = decide(document, request.app[OPTIONS_KEY])
    if decision.result == "error":
        _log.warning("webhook: %s", decision.reason)
        status = 400 if decision.response["response"].get("status") else 200
        return decision.response, status, "error"
    request_obj = document["request"]
    _log.info("webhook: %s pod %s/%s: %s", decision.result,
              request_obj.get("namespace", ""), _name(request_obj), decision.reason)
    return decision.response, 200, decision.result


def _name(request: dict[str, Any]) -> str:
    pod = request.get("object")
    return pod_name(pod) if isinstance(pod, dict) else "<none>"
