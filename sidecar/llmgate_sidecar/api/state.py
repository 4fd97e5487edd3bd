"""Typed keys for the app's state (`web.AppKey`) and per-request values (`web.RequestKey`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from llmgate_sidecar.cache.response import ResponseCache
from llmgate_sidecar.config.source import ConfigSource
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.accounting import Accountant
from llmgate_sidecar.policy.guardrails import Guardrails
from llmgate_sidecar.routing.router import Router
from llmgate_sidecar.settings import SidecarSettings
from llmgate_sidecar.upstream.transport import Transports

SETTINGS = web.AppKey("settings", SidecarSettings)
METRICS = web.AppKey("metrics", Metrics)
ROUTER = web.AppKey("router", Router)
TRANSPORTS = web.AppKey("transports", Transports)
CONFIG = web.AppKey("config", ConfigSource)
ACCOUNTANT = web.AppKey("accountant", Accountant)
CACHE = web.AppKey("cache", ResponseCache)
GUARDRAILS = web.AppKey("guardrails", Guardrails)
# Set by the server on SIGTERM: /readyz answers 503 from then on.
DRAINING = web.AppKey("draining", asyncio.Event)
REQUEST_ID = web.RequestKey("request_id", str)
