"""redis-py imported without its OpenTelemetry metrics hook (issue 16, docs/performance.md).

redis-py 8 tries `opentelemetry.sdk.metrics` and `opentelemetry.metrics` when it is
imported, for its own client metrics, an opt-in feature llmgate never turns on: where the
OpenTelemetry SDK is installed (the `tracing` extra, the dev environment) that import alone
was 61 modules, ≈ 1.8 MiB and 0.14 s of a sidecar's start even with tracing off. Its
documented fallback is "OTel SDK not installed": `import_redis` imports redis-py once with
those names absent from `sys.modules`' view (a `None` entry: the import system's documented
"not importable"), then removes the entries it added, so tracing (observability/tracing.py)
imports OpenTelemetry as usual whenever it is on. Names already imported stay untouched.
`redis_client` imports this first; tests/sidecar/test_lean_imports.py checks that a sidecar
with a Redis URL holds no OpenTelemetry module while the SDK is installed.
"""

from __future__ import annotations

import importlib
import sys

# What redis-py's import tries, parents first (hiding a parent hides its children).
REDIS_OTEL_IMPORTS = ("opentelemetry", "opentelemetry.metrics", "opentelemetry.sdk.metrics")


def import_redis() -> None:
    """Import redis-py (idempotent) as if the OpenTelemetry SDK were not installed."""
    if "redis" in sys.modules:
        return
    hidden = [name for name in REDIS_OTEL_IMPORTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("redis.asyncio")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


import_redis()
