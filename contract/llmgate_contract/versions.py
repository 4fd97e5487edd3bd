"""Schema versions of the compiled config: written in the oldest one that expresses it, read
by every sidecar whose range covers it. The skew policy (docs/upgrade.md) rests on this.

Writer (`document`): each field added after version 1 declares the version it came with
(`Meta(extra=since(N))`); a config is written as the lowest version whose
fields hold everything it says, with the later fields left out (they are at their
defaults). So an older sidecar gets a document it reads whenever one exists.
Reader (`read`): a version above SCHEMA_VERSION (or below MIN_SCHEMA_VERSION) is refused
with `UnsupportedSchema`; fields this build does not know are left out and listed (a later
release may add optional fields whose absence is safe; anything else needs a new version).
The generation is the hash of the document as written, unknown fields included.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import msgspec

if TYPE_CHECKING:
    from llmgate_contract.config import CompiledConfig

SINCE = "x-llmgate-since"


def since(version: int) -> dict[str, Any]:
    """`Meta(extra=...)` of a field that schema `version` added."""
    return {SINCE: version}


class UnsupportedSchema(ValueError):
    """A document in a schema version this build does not read (the message says which)."""

    def __init__(self, version: Any, low: int, high: int) -> None:
        super().__init__(f"config schema version {version!r} is not one this sidecar reads "
                         f"({low}..{high}); upgrade the sidecar image (see docs/upgrade.md)")
        self.version = version


def canonical(document: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, no whitespace; equal documents, equal text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- the fields of a struct ----------------------------------------------------------------

_NO_DEFAULT: Any = msgspec.NODEFAULT


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a config struct as the writer, the reader and docs/reference.md see it:
    read from its declaration (type, `Meta(description=..., extra=since(N))`, default)."""

    attr: str
    """Python attribute name ("" for the tag of a tagged struct, which is no attribute)."""
    key: str
    """JSON name."""
    type: Any
    """The annotation without its `Meta`."""
    description: str
    since: int
    default: Any = _NO_DEFAULT
    factory: Callable[[], Any] | None = None
    tag: bool = False

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT and self.factory is None

    def default_value(self) -> Any:
        return self.factory() if self.factory is not None else self.default


@functools.cache
def struct_fields(cls: type[msgspec.Struct]) -> tuple[FieldSpec, ...]:
    """The fields of `cls` in declaration order, its tag first (a tagged union's member
    carries its tag as a JSON field, described by the class's `TAG_DESCRIPTION`)."""
    config = cls.__struct_config__
    specs = []
    if config.tag_field is not None:
        specs.append(FieldSpec("", config.tag_field, Literal[config.tag],
                               getattr(cls, "TAG_DESCRIPTION", ""), 1, config.tag, tag=True))
    for info in msgspec.structs.fields(cls):
        annotation, meta = info.type, None
        if get_origin(annotation) is Annotated:
            annotation, *extras = get_args(annotation)
            meta = next((m for m in extras if isinstance(m, msgspec.Meta)), None)
        extra = (meta.extra if meta is not None else None) or {}
        added = extra.get(SINCE, 1)
        factory = None if info.default_factory is msgspec.NODEFAULT else info.default_factory
        specs.append(FieldSpec(info.name, info.encode_name, annotation,
                               (meta.description if meta is not None else None) or "",
                               added if isinstance(added, int) else 1, info.default, factory))
    return tuple(specs)


def _struct_types(annotation: Any) -> list[type[msgspec.Struct]]:
    return [a for a in (annotation, *get_args(annotation))
            if isinstance(a, type) and issubclass(a, msgspec.Struct)]


# -- writing -----------------------------------------------------------------------------

def _children(value: Any) -> list[Any]:
    if isinstance(value, msgspec.Struct):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _children(item)]
    if isinstance(value, Mapping):
        return [v for item in value.values() for v in _children(item)]
    return []


def needed_version(model: msgspec.Struct) -> int:
    """The lowest schema version whose fields express `model` (later fields at defaults)."""
    version = 1
    for spec in struct_fields(type(model)):
        if spec.tag:
            continue
        value = getattr(model, spec.attr)
        if spec.since > version and value != spec.default_value():
            version = spec.since
        for child in _children(value):
            version = max(version, needed_version(child))
    return version


def _strip(model: msgspec.Struct, dumped: Any, version: int) -> None:
    """Remove from `dumped` (the struct's JSON-like data) the fields newer than `version`."""
    if not isinstance(dumped, dict):
        return
    for spec in struct_fields(type(model)):
        if spec.tag:
            continue
        if spec.since > version:
            dumped.pop(spec.key, None)
            continue
        value = getattr(model, spec.attr)
        sub = dumped.get(spec.key)
        if isinstance(value, msgspec.Struct):
            _strip(value, sub, version)
        elif isinstance(value, (list, tuple)) and isinstance(sub, list):
            for item, item_dump in zip(value, sub, strict=False):
                if isinstance(item, msgspec.Struct):
                    _strip(item, item_dump, version)
        elif isinstance(value, Mapping) and isinstance(sub, dict):
            for k, item in value.items():
                if isinstance(item, msgspec.Struct):
                    _strip(item, sub.get(k), version)


def document(config: CompiledConfig) -> dict[str, Any]:
    """The config as written: in the oldest schema version that expresses it."""
    version = needed_version(config)
    dumped: dict[str, Any] = msgspec.to_builtins(config)
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


def _known(model: type[msgspec.Struct], raw: Any, path: str, ignored: list[str]) -> Any:
    """`raw` without the keys `model` does not define (recursively), listing them."""
    if not isinstance(raw, dict):
        return raw
    fields = {spec.key: spec for spec in struct_fields(model)}
    out = {}
    for key, value in raw.items():
        spec = fields.get(key)
        if spec is None:
            ignored.append(f"{path}.{key}" if path else key)
            continue
        out[key] = _known_value(spec.type, value, f"{path}.{key}" if path else key, ignored)
    return out


def _known_value(annotation: Any, value: Any, path: str, ignored: list[str]) -> Any:
    if get_origin(annotation) is Annotated:
        return _known_value(get_args(annotation)[0], value, path, ignored)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _known(annotation, value, path, ignored)
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin in (list, tuple) and isinstance(value, list) and args:
        return [_known_value(args[0], v, f"{path}[{i}]", ignored) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _known_value(args[1], v, f"{path}.{k}", ignored) for k, v in value.items()}
    models = _struct_types(annotation)
    if isinstance(value, dict) and models:
        # A union of structs (Target | Group, X | None): pick by the tag if any.
        for candidate in models:
            config = candidate.__struct_config__
            if len(models) == 1 or (config.tag_field is not None
                                    and value.get(config.tag_field) == config.tag):
                return _known(candidate, value, path, ignored)
    if args and any(get_origin(a) in (list, dict, tuple) for a in args):
        inner = next(a for a in args if get_origin(a) in (list, dict, tuple))
        return _known_value(inner, value, path, ignored)
    return value


def read(text: str | bytes, *, low: int, high: int) -> Loaded:
    """Read a config document (raises UnsupportedSchema, or ValueError: invalid JSON or
    a `msgspec.ValidationError` naming the path of the problem)."""
    from llmgate_contract.config import CompiledConfig

    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("the config document is not a JSON object")
    version = raw.get("schemaVersion", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not low <= version <= high:
        raise UnsupportedSchema(version, low, high)
    ignored: list[str] = []
    known = _known(CompiledConfig, raw, "", ignored)
    config = msgspec.convert(known, CompiledConfig)
    return Loaded(config=config, schema_version=version, generation=_hash(raw),
                  ignored=tuple(ignored))


def _hash(document: Mapping[str, Any]) -> str:
    from llmgate_contract.config import content_hash
    return content_hash(canonical(document))
