"""Schema versions of the compiled config: written in the oldest one that expresses it, read
by every sidecar whose range covers it. The skew policy (docs/upgrade.md) rests on this.

Writer (`document`): each field added after version 1 declares the version it came with
(`Field(json_schema_extra=since(N))`); a config is written as the lowest version whose
fields hold everything it says, with the later fields left out (they are at their
defaults). So an older sidecar gets a document it reads whenever one exists.
Reader (`read`): a version above SCHEMA_VERSION (or below MIN_SCHEMA_VERSION) is refused
with `UnsupportedSchema`; fields this build does not know are left out and listed (a later
release may add optional fields whose absence is safe; anything else needs a new version).
The generation is the hash of the document as written, unknown fields included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from llmgate_contract.config import CompiledConfig

SINCE = "x-llmgate-since"


def since(version: int) -> dict[str, Any]:
    """`json_schema_extra` of a field that schema `version` added."""
    return {SINCE: version}


def field_since(info: FieldInfo) -> int:
    extra = info.json_schema_extra
    value = extra.get(SINCE, 1) if isinstance(extra, Mapping) else 1
    return value if isinstance(value, int) else 1


class UnsupportedSchema(ValueError):
    """A document in a schema version this build does not read (the message says which)."""

    def __init__(self, version: Any, low: int, high: int) -> None:
        super().__init__(f"config schema version {version!r} is not one this sidecar reads "
                         f"({low}..{high}); upgrade the sidecar image (see docs/upgrade.md)")
        self.version = version


def canonical(document: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, no whitespace; equal documents, equal text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- writing -----------------------------------------------------------------------------

def _children(value: Any) -> list[Any]:
    if isinstance(value, BaseModel):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _children(item)]
    if isinstance(value, Mapping):
        return [v for item in value.values() for v in _children(item)]
    return []


def needed_version(model: BaseModel) -> int:
    """The lowest schema version whose fields express `model` (later fields at defaults)."""
    version = 1
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        added = field_since(info)
        if added > version and value != info.get_default(call_default_factory=True):
            version = added
        for child in _children(value):
            version = max(version, needed_version(child))
    return version


def _strip(model: BaseModel, dumped: Any, version: int) -> None:
    """Remove from `dumped` (the model's by-alias dump) the fields newer than `version`."""
    if not isinstance(dumped, dict):
        return
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if field_since(info) > version:
            dumped.pop(key, None)
            continue
        value = getattr(model, name)
        sub = dumped.get(key)
        if isinstance(value, BaseModel):
            _strip(value, sub, version)
        elif isinstance(value, (list, tuple)) and isinstance(sub, list):
            for item, item_dump in zip(value, sub, strict=False):
                if isinstance(item, BaseModel):
                    _strip(item, item_dump, version)
        elif isinstance(value, Mapping) and isinstance(sub, dict):
            for k, item in value.items():
                if isinstance(item, BaseModel):
                    _strip(item, sub.get(k), version)


def document(config: CompiledConfig) -> dict[str, Any]:
    """The config as written: in the oldest schema version that expresses it."""
    version = needed_version(config)
    dumped = config.model_dump(mode="json", by_alias=True)
    _strip(config, dumped, version)
    dumped["schemaVersion"] = version
    return dumped


# -- reading -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    """A document read by this build: the config, its version, its generation (hash of
    the document as written) and the fields this build did not know (left out)."""

    config: CompiledConfig
    schema_version: int
    generation: str
    ignored: tuple[str, ...]


def _known(model: type[BaseModel], raw: Any, path: str, ignored: list[str]) -> Any:
    """`raw` without the keys `model` does not define (recursively), listing them."""
    if not isinstance(raw, dict):
        return raw
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    out = {}
    for key, value in raw.items():
        info = fields.get(key)
        if info is None:
            ignored.append(f"{path}.{key}" if path else key)
            continue
        out[key] = _known_value(info.annotation, value, f"{path}.{key}" if path else key,
                                ignored)
    return out


def _known_value(annotation: Any, value: Any, path: str, ignored: list[str]) -> Any:
    if get_origin(annotation) is Annotated:
        return _known_value(get_args(annotation)[0], value, path, ignored)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _known(annotation, value, path, ignored)
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin in (list, tuple) and isinstance(value, list) and args:
        return [_known_value(args[0], v, f"{path}[{i}]", ignored) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _known_value(args[1], v, f"{path}.{k}", ignored) for k, v in value.items()}
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if isinstance(value, dict) and models:
        # A union of models (Target | Group, X | None): pick by the discriminator if any.
        tag = value.get("type")
        for candidate in models:
            default = candidate.model_fields.get("type")
            if len(models) == 1 or (default is not None and default.default == tag):
                return _known(candidate, value, path, ignored)
    if args and any(get_origin(a) in (list, dict, tuple) for a in args):
        inner = next(a for a in args if get_origin(a) in (list, dict, tuple))
        return _known_value(inner, value, path, ignored)
    return value


def read(text: str | bytes, *, low: int, high: int) -> Loaded:
    """Read a config document (raises UnsupportedSchema, ValueError, ValidationError)."""
    from llmgate_contract.config import CompiledConfig

    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("the config document is not a JSON object")
    version = raw.get("schemaVersion", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not low <= version <= high:
        raise UnsupportedSchema(version, low, high)
    ignored: list[str] = []
    known = _known(CompiledConfig, raw, "", ignored)
    config = CompiledConfig.model_validate(known)
    return Loaded(config=config, schema_version=version, generation=_hash(raw),
                  ignored=tuple(ignored))


def _hash(document: Mapping[str, Any]) -> str:
    from llmgate_contract.config import content_hash
    return content_hash(canonical(document))
