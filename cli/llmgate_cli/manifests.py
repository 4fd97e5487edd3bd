"""Kubernetes manifests read from files, with the file and line of every field.

`load(paths)` reads YAML files (directories recursively) into `Document`s: the object, where
it starts, and a map from each field's path to its line (PyYAML node marks), so a problem
deep in a spec can name its own line. `classify` sorts a document into an llmgate CR, a
Secret (stand-in for a cluster Secret), something ignored, or an error. Used by
`llmgate dev`, `validate` and `compile`; no compiling or serving here.
"""

from __future__ import annotations

import base64
import binascii
import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from llmgate_operator import api

FieldPath = tuple[str | int, ...]
CR_KINDS = frozenset(api.SPEC_MODELS)


class InputError(Exception):
    """A path cannot be read at all (missing, unreadable); the message says which and why."""


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class Document:
    """One YAML document of a file: the object and the line of each of its fields."""

    file: str
    index: int
    obj: Any
    start: Location
    lines: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[FieldPath] = field(default_factory=list)

    def at(self, path: Iterable[str | int]) -> Location:
        """Where `path` is, or its nearest ancestor that exists (a missing field: its parent)."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                line, column = self.lines[parts]
                return Location(self.file, line, column)
            parts = parts[:-1]
        return self.start

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind")) if isinstance(self.obj, dict) else ""

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        return str(meta.get("name")) if isinstance(meta, dict) and meta.get("name") else ""

    @property
    def label(self) -> str:
        return f"{self.kind or '?'}/{self.name or '?'}"


@dataclass(frozen=True)
class Problem:
    """Something wrong (or worth saying) about the inputs, at a file and line."""

    severity: str
    """`error` (rejected), `warning` (accepted, probably not what you meant) or `notice`."""
    where: Location
    message: str
    object: str = ""
    """`Kind/name` of the object it concerns, if any."""
    field: str = ""
    """The field path inside the object, e.g. `spec.targets[0].weight`."""
    source: str = ""
    """What found it: yaml, manifest, schema, cel, spec, compile."""

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "file": self.where.file, "line": self.where.line,
                "column": self.where.column, "object": self.object, "field": self.field,
                "source": self.source, "message": self.message}

    def __str__(self) -> str:
        what = " ".join(p for p in (self.object, self.field) if p)
        return f"{self.where}: {self.severity}: {what + ': ' if what else ''}{self.message}"


def yaml_files(paths: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{raw}: no such file or directory")
    return found


def _walk(node: yaml.Node, path: FieldPath, doc: Document) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*path, key)
            if key in seen:
                doc.duplicates.append(child)
            seen.add(key)
            doc.lines[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk(item, child, doc)


def read_file(path: Path) -> tuple[list[Document], list[Problem]]:
    """The documents of one file, or a problem where YAML parsing stopped."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: {exc}") from None
    docs: list[Document] = []
    loader = yaml.SafeLoader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            obj = loader.construct_document(node)
            if obj is None:
                continue
            mark = node.start_mark
            doc = Document(str(path), index, obj, Location(str(path), mark.line + 1, 1))
            _walk(node, (), doc)
            docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = Location(str(path), mark.line + 1, mark.column + 1) if mark else \
            Location(str(path), 1)
        problem = getattr(exc, "problem", None) or str(exc)
        return docs, [Problem("error", where, f"invalid YAML: {problem}", source="yaml")]
    finally:
        loader.dispose()
    return docs, []


def load(paths: Iterable[str]) -> tuple[list[Document], list[Problem]]:
    """Every document of every file under `paths` (InputError if a path does not exist)."""
    docs: list[Document] = []
    problems: list[Problem] = []
    for path in yaml_files(paths):
        found, trouble = read_file(path)
        docs += found
        problems += trouble
    return docs, problems


# -- what a document is ----------------------------------------------------------------------

CR, SECRET, IGNORED, INVALID = "cr", "secret", "ignored", "invalid"


def classify(doc: Document) -> tuple[str, Problem | None]:
    """(`cr`|`secret`|`ignored`|`invalid`, the problem or notice to report, if any)."""
    obj = doc.obj
    if isinstance(obj, dict) and obj.get("kind") == "List" and obj.get("apiVersion") == "v1":
        return INVALID, Problem("error", doc.start, "a v1 List: write its items as separate "
                                "YAML documents", source="manifest")
    if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
        return INVALID, Problem("error", doc.start, "not a Kubernetes object (apiVersion and "
                                "kind are required)", source="manifest")
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    group, _, version = api_version.rpartition("/")
    if group == api.GROUP:
        if kind not in CR_KINDS:
            close = difflib.get_close_matches(kind, sorted(CR_KINDS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else \
                f" (kinds: {', '.join(sorted(CR_KINDS))})"
            return INVALID, Problem("error", doc.at(("kind",)),
                                    f"kind {kind!r} is not defined in {api.GROUP}{hint}",
                                    object=doc.label, field="kind", source="manifest")
        if version != api.VERSION:
            return INVALID, Problem("error", doc.at(("apiVersion",)),
                                    f"{api.GROUP} serves version {api.VERSION}, not "
                                    f"{version!r}", object=doc.label, field="apiVersion",
                                    source="manifest")
    if not doc.name:
        return INVALID, Problem("error", doc.at(("metadata",)), "metadata.name is required",
                                object=doc.label, field="metadata.name", source="manifest")
    if group == api.GROUP:
        return CR, None
    if api_version == "v1" and kind == "Secret":
        return SECRET, None
    return IGNORED, Problem("notice", doc.start, f"ignored: {api_version} {kind} is not an "
                            f"llmgate resource", object=doc.label, source="manifest")


def secret_data(doc: Document) -> tuple[dict[str, str], list[Problem]]:
    """Decoded `data` (base64) and `stringData` of a Secret manifest."""
    data: dict[str, str] = {}
    problems: list[Problem] = []
    raw = doc.obj.get("data") or {}
    for key, value in (raw.items() if isinstance(raw, Mapping) else ()):
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            problems.append(Problem("error", doc.at(("data", key)), f"Secret data key {key!r} "
                                    "is not valid base64 of UTF-8 text", object=doc.label,
                                    field=f"data.{key}", source="manifest"))
    strings = doc.obj.get("stringData") or {}
    if isinstance(strings, Mapping):
        data.update({str(k): str(v) for k, v in strings.items()})
    return data, problems


def field_name(path: Iterable[str | int]) -> str:
    """('spec', 'targets', 0, 'weight') -> 'spec.targets[0].weight'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def iter_crs(docs: Iterable[Document]) -> Iterator[Document]:
    for doc in docs:
        if classify(doc)[0] == CR:
            yield doc
