"""What `llmgate sidecar` imports: only what a request needs (issue 16, docs/performance.md).

Each case runs a fresh interpreter that imports the sidecar's entrypoint and builds its app
(as `llmgate sidecar` does before it listens), then prints `sys.modules`. Without a Redis URL
no redis-py (and nothing it pulls in, such as OpenTelemetry); without OTEL_* no tracing
packages; never the operator, its compiler or its Kubernetes clients; no cloud-identity
library until a provider needs one; no RE2 until a route has block patterns, no XML parser
until AWS STS answers; no provider adapter the config does not use; no pydantic (the
compiled config is read with msgspec; pydantic is the operator's, for its CRD models). With a
URL, Redis is imported: the lazy path is real, and still no OpenTelemetry (redis-py 8 imports
its metrics SDK when installed; llmgate_contract.redis_import keeps it out) nor any other of
the names above.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from llmgate_cli import main  # the `llmgate` console script's module
from llmgate_sidecar.server import main as sidecar_main  # what `llmgate sidecar` runs
from llmgate_sidecar.app import create_app
from llmgate_sidecar.settings import SidecarSettings
create_app(SidecarSettings(config_dir=sys.argv[1], credentials_dir=sys.argv[1],
                           redis_url=sys.argv[2] or None))
print(json.dumps(sorted(sys.modules)))
"""

# Never in a sidecar: the control plane, and libraries only a provider kind that asks for
# them (Vertex: google-auth) or an optional feature (tracing) may import.
NEVER = ("llmgate_operator", "kopf", "kubernetes", "kubernetes_asyncio", "yaml",
         "google", "botocore", "boto3", "azure", "opentelemetry", "pydantic", "pydantic_core",
         "pydantic_settings",
         # Loaded by the first route with blockPatterns / the first STS answer (Bedrock).
         "re2", "xml",
         # Adapters of wire formats the config does not use (it names none here).
         "llmgate_sidecar.upstream.providers.anthropic",
         "llmgate_sidecar.upstream.providers.bedrock", "llmgate_sidecar.upstream.sigv4",
         "llmgate_sidecar.upstream.providers.gemini", "llmgate_sidecar.upstream.providers.cohere")
REDIS = ("redis", "llmgate_contract.redis_client", "llmgate_sidecar.policy.redis_store",
         "llmgate_sidecar.cache.redis_backend")


def imported(tmp_path: Path, redis_url: str = "") -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), redis_url],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def top(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_the_sidecar_without_redis_imports_neither_redis_nor_control_plane_code(
        tmp_path: Path) -> None:
    modules = imported(tmp_path)
    assert "llmgate_sidecar.api.lifecycle" in modules  # the probe did import the sidecar
    assert top(modules, NEVER) == []
    assert top(modules, REDIS) == []


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0"])
def test_a_redis_url_brings_in_the_redis_store_and_cache(tmp_path: Path, url: str) -> None:
    modules = imported(tmp_path, url)
    assert {"redis", "llmgate_sidecar.policy.redis_store",
            "llmgate_sidecar.cache.redis_backend"} <= modules
    # The dev environment installs the OpenTelemetry SDK, so redis-py would import it here.
    assert importlib.util.find_spec("opentelemetry.sdk.metrics") is not None
    assert top(modules, NEVER) == []


OTEL_AFTER_REDIS = """
import sys
import llmgate_contract.redis_client
import redis.observability.providers as providers
assert not providers.OTEL_AVAILABLE
assert not any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in sys.modules)
assert None not in sys.modules.values()
from opentelemetry.sdk.metrics import MeterProvider  # tracing can still import it
from opentelemetry import metrics
print(MeterProvider.__name__, metrics.__name__)
"""


def test_opentelemetry_stays_importable_after_redis_py_was_imported_without_it() -> None:
    done = subprocess.run([sys.executable, "-c", OTEL_AFTER_REDIS], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MeterProvider", "opentelemetry.metrics"]


def test_llmgate_version_imports_neither_pydantic_nor_yaml() -> None:
    """`llmgate version` runs in the sidecar image too, which installs neither."""
    probe = ("import json, sys\nfrom llmgate_cli import main\nmain(['version', '-o', 'json'])\n"
             "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    info, modules = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert info["api"] == "llmgate.io/v1alpha1"
    assert top(set(modules), ("pydantic", "pydantic_core", "yaml", "llmgate_operator.api",
                              "kopf", "kubernetes")) == []
