"""The checks behind `llmgate validate`, `compile` and `dev`: manifests in, problems out.

`check(docs)` judges every document as the API server would (manifest shape, the CRD schema,
its CEL rules) and as the operator would (its spec parse), and keeps the CRs that pass;
`compile_checked` then compiles each namespace with the operator's own `compile_namespace`
and turns the conditions only an edit can clear into problems, each at a file and line.
Pure apart from reading nothing: documents come from `manifests`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmgate_operator import crdcheck
from llmgate_operator.compile import (
    API_KEY_DATA_KEY,
    Compilation,
    Condition,
    compile_namespace,
    secret_keys,
)

from llmgate_cli.manifests import (
    CR,
    SECRET,
    Document,
    Location,
    Problem,
    classify,
    field_name,
    secret_data,
)

Key = tuple[str, str, str]
"""(namespace, kind, name) of a CR."""

# Compile outcomes that only an edit of the CR can clear: errors. Others depend on the
# cluster (a Secret, a provider defined elsewhere) and are warnings.
EDIT_REASONS = frozenset({"InvalidSpec", "MissingCredentials", "DuplicateModel"})
QUIET_REASONS = frozenset({"Resolved", "KeyIssued", "Disabled"})


@dataclass
class Checked:
    """The outcome of `check`: what passed, what failed, and every problem found."""

    valid: dict[Key, Document] = field(default_factory=dict)
    invalid: dict[Key, list[Problem]] = field(default_factory=dict)
    secrets: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    documents: int = 0
    rejected: int = 0
    """llmgate documents with an error (duplicates of one object each count)."""
    first: dict[Key, Document] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def namespaces(self) -> list[str]:
        return sorted({k[0] for k in (*self.valid, *self.invalid)} | set(self.secrets))


def namespace_of(doc: Document, default: str) -> str:
    meta = doc.obj.get("metadata") or {}
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    return str(namespace) if namespace else default


def check(docs: Iterable[Document], *, namespace: str = "default",
          problems: Iterable[Problem] = (), override: bool = False) -> Checked:
    """Judge every document; CRs without errors end up in `valid`. With `override`, every
    object is taken to be in `namespace` (`llmgate dev` serves one namespace)."""
    out = Checked(problems=list(problems))
    schemas = crdcheck.openapi_schemas()
    for doc in docs:
        out.documents += 1
        what, problem = classify(doc)
        if problem is not None:
            out.problems.append(problem)
            out.rejected += problem.severity == "error"
        ns = namespace if override else namespace_of(doc, namespace)
        if what == SECRET:
            data, trouble = secret_data(doc)
            out.secrets.setdefault(ns, {})[doc.name] = data
            out.problems += trouble
        if what != CR:
            continue
        key = (ns, doc.kind, doc.name)
        found = [Problem("error", doc.at(path), "duplicate key (YAML keeps only the last)",
                         object=doc.label, field=field_name(path), source="yaml")
                 for path in doc.duplicates]
        first = out.first.setdefault(key, doc)
        if first is not doc:
            found.append(Problem("error", doc.start, f"{doc.label} in namespace {ns} is "
                                 f"defined twice (first at {first.start})",
                                 object=doc.label, source="manifest"))
        found += [Problem("error", doc.at(f.path), f.message, object=doc.label,
                          field=field_name(f.path), source=f.source)
                  for f in crdcheck.check(schemas[doc.kind], doc.obj)]
        out.problems += found
        if found:
            out.rejected += 1
            out.invalid[key] = out.invalid.get(key, []) + found
            out.valid.pop(key, None)
        else:
            out.valid[key] = doc
    return out


def _with_placeholders(bodies: Iterable[Mapping[str, Any]],
                       secrets: Mapping[str, Mapping[str, str]], *,
                       keys: bool) -> dict[str, dict[str, str]]:
    """The Secrets of the files plus a stand-in for every referenced key they lack (a GitOps
    repository rarely holds Secrets). VirtualKey keys only when `keys`: a stand-in key's hash
    in `compile` output would look like a real one."""
    out = {name: dict(data) for name, data in secrets.items()}
    for body in bodies:
        for name, data_key in secret_keys(body):
            if body["kind"] == "VirtualKey" and (not keys or data_key != API_KEY_DATA_KEY):
                continue
            out.setdefault(name, {}).setdefault(data_key, f"lg-placeholder-{name}-{data_key}")
    return out


def compile_checked(checked: Checked, *, now: datetime, placeholder_keys: bool,
                    extra: Mapping[Key, Mapping[str, Any]] | None = None,
                    ) -> tuple[dict[str, Compilation], list[Problem]]:
    """Compile each namespace's valid CRs (plus `extra` bodies, e.g. last good versions);
    problems for the conditions that matter, at the CR's spec."""
    bodies: dict[str, list[tuple[Key, Mapping[str, Any]]]] = {}
    for key, doc in checked.valid.items():
        bodies.setdefault(key[0], []).append((key, doc.obj))
    for key, body in (extra or {}).items():
        bodies.setdefault(key[0], []).append((key, body))
    results: dict[str, Compilation] = {}
    problems: list[Problem] = []
    for ns in sorted(set(bodies) | set(checked.secrets)):
        objs = [b for _, b in bodies.get(ns, [])]
        secrets = _with_placeholders(objs, checked.secrets.get(ns, {}), keys=placeholder_keys)
        result = compile_namespace(ns, objs, secrets, now=now)
        results[ns] = result
        for key, _ in bodies.get(ns, []):
            found = checked.valid.get(key)
            condition = result.conditions.get((key[1], key[2]))
            if found is None or condition is None or condition.reason in QUIET_REASONS:
                continue
            doc = found
            if condition.reason == "KeySecretNotFound" and not placeholder_keys:
                problems.append(Problem(
                    "warning", doc.start, "left out: its key Secret is not in the files "
                    "(the operator generates one in the cluster)", object=doc.label,
                    source="compile"))
                continue
            severity = "error" if condition.reason in EDIT_REASONS else "warning"
            problems.append(Problem(severity, _where(doc, condition), f"{condition.reason}: "
                                    f"{condition.message}", object=doc.label, source="compile"))
    return results, problems


def _where(doc: Document, condition: Condition) -> Location:
    """The field a condition is about: the model name a duplicate claims, the first target
    whose provider did not resolve, else the spec."""
    if condition.reason == "DuplicateModel":
        return doc.at(("spec", "model"))
    missing = {t["provider"] for t in condition.extra.get("targets", [])
               if not t.get("resolved")}
    for path in sorted(doc.lines, key=lambda p: doc.lines[p]):
        if path and path[-1] == "provider" and path[0] == "spec":
            node: Any = doc.obj
            for part in path:
                node = node[part]
            if node in missing:
                return doc.at(path)
    return doc.at(("spec",))
