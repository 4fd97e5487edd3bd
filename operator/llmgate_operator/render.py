"""Compilation -> Kubernetes object bodies and status; pure.

`reconcile` calls these to get the ConfigMap/Secret bodies of a namespace, the merge patch
that brings a live object to its desired state (None: nothing to write), each CR's status
(kstatus-style conditions), and VirtualKey key Secret bodies. No I/O, no clock of its own.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmgate_contract import CONFIGMAP_NAME, CREDENTIALS_SECRET_NAME, bundle_files

from llmgate_operator import api
from llmgate_operator.compile import Compilation, Condition
from llmgate_operator.keys import MANAGED_BY, MANAGED_BY_LABEL, ROTATE_ANNOTATION, format_time

GENERATION_ANNOTATION = "llmgate.io/generation"
VIRTUAL_KEY_LABEL = "llmgate.io/virtual-key"
READY = "Ready"
EXPIRED = "Expired"

Body = dict[str, Any]


def _metadata(name: str, namespace: str, generation: str | None = None) -> Body:
    meta: Body = {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}}
    if generation is not None:
        meta["annotations"] = {GENERATION_ANNOTATION: generation}
    return meta


def encode_data(data: Mapping[str, str]) -> dict[str, str]:
    """Secret `data`: base64 of UTF-8 (written as `data`, never `stringData`)."""
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def decode_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """Decoded Secret `data`; values that are not UTF-8 text are left out (never credentials)."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def config_objects(compilation: Compilation) -> tuple[Body, Body]:
    """The ConfigMap `llmgate-config` and Secret `llmgate-credentials` of one namespace."""
    config = compilation.config
    cm_data, secret_data = bundle_files(config, compilation.credentials)
    generation = config.generation
    configmap: Body = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _metadata(CONFIGMAP_NAME, config.namespace, generation),
        "data": cm_data,
    }
    secret: Body = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": _metadata(CREDENTIALS_SECRET_NAME, config.namespace, generation),
        "data": encode_data(secret_data),
    }
    return configmap, secret


def object_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Body | None:
    """A merge patch taking `current` to `desired` (data, labels, annotations, owners), or None.

    Keys of `data` that are no longer desired are removed (null in a merge patch); labels and
    annotations that other tools put on the object are left alone.
    """
    patch: Body = {}
    meta_patch: Body = {}
    cur_meta, want_meta = current.get("metadata") or {}, desired.get("metadata") or {}
    for part in ("labels", "annotations"):
        have = cur_meta.get(part) or {}
        changed = {k: v for k, v in (want_meta.get(part) or {}).items() if have.get(k) != v}
        if changed:
            meta_patch[part] = changed
    if "ownerReferences" in want_meta and cur_meta.get("ownerReferences") != want_meta[
            "ownerReferences"]:
        meta_patch["ownerReferences"] = want_meta["ownerReferences"]
    if meta_patch:
        patch["metadata"] = meta_patch
    have_data, want_data = current.get("data") or {}, desired.get("data") or {}
    if have_data != want_data:
        patch["data"] = {**{k: None for k in have_data if k not in want_data}, **want_data}
    return patch or None


def ready_condition(
    condition: Condition, *, generation: int | None, previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> Body:
    """The kstatus `Ready` condition; its time moves only when status or reason changes."""
    return _condition(READY, condition.ready, condition.reason, condition.message,
                      generation=generation, previous=previous, now=now)


def _condition(
    kind: str, ok: bool, reason: str, message: str, *, generation: int | None,
    previous: Sequence[Mapping[str, Any]], now: datetime,
) -> Body:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    unchanged = (before is not None and before.get("status") == status
                 and before.get("reason") == reason and before.get("lastTransitionTime"))
    cond: Body = {
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": before["lastTransitionTime"] if unchanged and before
        else format_time(now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def desired_status(
    compilation: Compilation, body: Mapping[str, Any], current: Mapping[str, Any], *,
    now: datetime,
) -> Body:
    """The status fields llmgate owns for one CR (other condition types are kept)."""
    kind, name = body["kind"], body["metadata"]["name"]
    generation = body["metadata"].get("generation")
    condition = compilation.conditions.get(
        (kind, name), Condition(False, "NotCompiled", "the resource was not compiled"))
    previous = list(current.get("conditions") or [])
    conditions = [ready_condition(condition, generation=generation, previous=previous, now=now)]
    status: Body = {}
    if kind == "LLMRoute":
        status["targets"] = list(condition.extra.get("targets", []))
    if kind == "VirtualKey":
        vk = next((k for k in compilation.config.virtual_keys if k.name == name), None)
        if vk is not None:
            status["keyPrefix"] = vk.key_prefix
            expired = bool(condition.extra.get("expired"))
            conditions.append(_condition(
                EXPIRED, expired, "Expired" if expired else "NotExpired",
                f"the key expired at {vk.expires_at}" if expired
                else (f"the key expires at {vk.expires_at}" if vk.expires_at
                      else "the key does not expire"),
                generation=generation, previous=previous, now=now))
        spec = body.get("spec") or {}
        status["secretName"] = (spec.get("secretName") if isinstance(spec, Mapping)
                                and isinstance(spec.get("secretName"), str)
                                else api.default_secret_name(name))
    owned = {c["type"] for c in conditions} | {READY, EXPIRED}
    others = [c for c in previous if c.get("type") not in owned]
    status["conditions"] = conditions + others
    if generation is not None:
        status["observedGeneration"] = generation
    return status


# Status fields llmgate writes; any other field (e.g. spend, written by another component)
# is left alone.
OWNED_STATUS = frozenset({"conditions", "observedGeneration", "targets", "keyPrefix",
                          "secretName"})


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Body | None:
    """The merge patch of `status` (only the fields that differ), or None if nothing does."""
    changed: Body = {k: v for k, v in desired.items() if current.get(k) != v}
    changed |= {k: None for k in OWNED_STATUS if k in current and k not in desired}
    if not changed:
        return None
    return {"status": changed}


def ready_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the Ready condition's status or reason differs (worth an Event)."""
    def key(status: Mapping[str, Any]) -> tuple[Any, Any] | None:
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == READY), None)
        return (cond.get("status"), cond.get("reason")) if cond else None
    return key(current) != key(desired)


def key_secret(
    body: Mapping[str, Any], secret_name: str, data: Mapping[str, str], *,
    rotation: str | None, adopt: bool,
) -> Body:
    """The key Secret of a VirtualKey `body`; owned and labelled managed only when `adopt`
    (a Secret someone else made stays theirs, llmgate only adds the key it lacked)."""
    meta = body["metadata"]
    secret_meta = _metadata(secret_name, meta["namespace"])
    if not adopt:
        secret_meta["labels"] = {}
    secret_meta["labels"][VIRTUAL_KEY_LABEL] = meta["name"]
    if rotation:
        secret_meta["annotations"] = {ROTATE_ANNOTATION: rotation}
    if adopt and meta.get("uid"):
        secret_meta["ownerReferences"] = [{
            "apiVersion": body.get("apiVersion", api.API_VERSION), "kind": body["kind"],
            "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True,
        }]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": secret_meta,
            "data": encode_data(data)}
