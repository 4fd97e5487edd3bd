"""llmgate's compiled-config contract, shared by the operator and the sidecar.

Immutable msgspec structs and pure functions: no Kubernetes, no aiohttp, no file I/O beyond what
a caller hands in. See `config` for the document, `versions` for how it is written and read
across schema versions, and `bundle` for how it is split across the ConfigMap and the Secret.
"""

from llmgate_contract.bundle import (
    Bundle,
    RefusedConfig,
    TornBundleError,
    bundle_files,
    read_bundle,
)
from llmgate_contract.config import (
    CONFIG_FILE,
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    GENERATION_FILE,
    MIN_SCHEMA_VERSION,
    POD_BOUND_KEY,
    PROVIDER_KINDS,
    REDIS_PASSWORD_KEY,
    SCHEMA_VERSION,
    CompiledConfig,
    parse_config,
    read_config,
)

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIG_FILE",
    "CREDENTIALS_SECRET_NAME",
    "GENERATION_FILE",
    "MIN_SCHEMA_VERSION",
    "POD_BOUND_KEY",
    "PROVIDER_KINDS",
    "REDIS_PASSWORD_KEY",
    "SCHEMA_VERSION",
    "Bundle",
    "CompiledConfig",
    "RefusedConfig",
    "TornBundleError",
    "bundle_files",
    "parse_config",
    "read_bundle",
    "read_config",
]
