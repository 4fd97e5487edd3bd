"""llmgate's compiled-config contract, shared by the operator and the sidecar.

Pure pydantic models and pure functions: no Kubernetes, no aiohttp, no file I/O beyond what
a caller hands in. See `config` for the document and `bundle` for how it is split across the
ConfigMap and the Secret.
"""

from llmgate_contract.bundle import Bundle, TornBundleError, bundle_files, read_bundle
from llmgate_contract.config import (
    CONFIG_FILE,
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    GENERATION_FILE,
    POD_BOUND_KEY,
    PROVIDER_KINDS,
    SCHEMA_VERSION,
    CompiledConfig,
    parse_config,
)

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIG_FILE",
    "CREDENTIALS_SECRET_NAME",
    "GENERATION_FILE",
    "POD_BOUND_KEY",
    "PROVIDER_KINDS",
    "SCHEMA_VERSION",
    "Bundle",
    "CompiledConfig",
    "TornBundleError",
    "bundle_files",
    "parse_config",
    "read_bundle",
]
