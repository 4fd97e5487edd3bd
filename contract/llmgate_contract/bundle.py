"""How a compiled config is split over the ConfigMap and the Secret, and put back together.

`bundle_files` (operator side) gives the data of both objects; `read_bundle` (sidecar side)
checks that both volumes carry the same generation and that the config validates, and
raises `TornBundleError` otherwise, so the caller can keep its last good config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmgate_contract.config import (
    CONFIG_FILE,
    GENERATION_FILE,
    SCHEMA_VERSION,
    CompiledConfig,
    read_config,
)
from llmgate_contract.versions import UnsupportedSchema


class TornBundleError(Exception):
    """The two volumes do not form one valid config (yet): keep serving the last good one."""


class RefusedConfig(TornBundleError):
    """A config in a schema version this build does not read: kept out on purpose (the
    operator is newer than this sidecar); the last good config keeps serving."""

    def __init__(self, message: str, schema_version: object) -> None:
        super().__init__(message)
        self.schema_version = schema_version


@dataclass(frozen=True)
class Bundle:
    config: CompiledConfig
    credentials: Mapping[str, str]
    generation: str = ""
    """The hash of the config document as written (unknown fields included); by default
    the hash of `config` as this build writes it."""
    schema_version: int = SCHEMA_VERSION
    ignored: tuple[str, ...] = ()
    """Fields of the document this build does not know and left out (a newer operator's
    optional additions)."""

    def __post_init__(self) -> None:
        if not self.generation:
            object.__setattr__(self, "generation", self.config.generation)


def bundle_files(
    config: CompiledConfig, credentials: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Return (ConfigMap data, Secret stringData) for `config` and its credential files."""
    generation = config.generation
    for name in credentials:
        if name in (GENERATION_FILE, CONFIG_FILE) or "/" in name or name.startswith(".."):
            raise ValueError(f"invalid credential file name {name!r}")
    config_data = {CONFIG_FILE: config.canonical_json(), GENERATION_FILE: generation}
    secret_data = {GENERATION_FILE: generation, **dict(sorted(credentials.items()))}
    return config_data, secret_data


def read_bundle(config_files: Mapping[str, str], secret_files: Mapping[str, str]) -> Bundle:
    """Validate the files of both volumes into a `Bundle`, or raise `TornBundleError`."""
    text = config_files.get(CONFIG_FILE)
    if text is None:
        raise TornBundleError(f"{CONFIG_FILE} is missing from the config volume")
    try:
        loaded = read_config(text)
    except UnsupportedSchema as exc:
        raise RefusedConfig(str(exc), exc.version) from None
    except ValueError as exc:  # msgspec.ValidationError among them
        raise TornBundleError(f"{CONFIG_FILE} is invalid: {_short(exc)}") from None
    config, generation = loaded.config, loaded.generation
    declared = config_files.get(GENERATION_FILE, "").strip()
    if declared != generation:
        raise TornBundleError(
            f"config generation file says {declared!r} but the content hashes to {generation!r}")
    secret_generation = secret_files.get(GENERATION_FILE, "").strip()
    if secret_generation != generation:
        raise TornBundleError(
            f"credentials are at generation {secret_generation!r}, config at {generation!r}")
    credentials = {k: v for k, v in secret_files.items() if k != GENERATION_FILE}
    missing = sorted(_referenced_files(config) - credentials.keys())
    if missing:
        raise TornBundleError(f"credential files missing: {', '.join(missing)}")
    return Bundle(config=config, credentials=credentials, generation=generation,
                  schema_version=loaded.schema_version, ignored=loaded.ignored)


def _referenced_files(config: CompiledConfig) -> set[str]:
    files: set[str] = set()
    for provider in config.providers.values():
        files.update(f for f in (provider.api_key_file, provider.gcp_key_file) if f)
        files.update(provider.aws_files.values())
        files.update(provider.header_files.values())
    return files


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return "; ".join(line.strip() for line in text[:4])
