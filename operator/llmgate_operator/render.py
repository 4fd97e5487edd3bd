"""Compilation -> Kubernetes object bodies and status; pure.

`reconcile` calls these to get the ConfigMap/Secret bodies of a namespace, the merge patch
that brings a live object to its desired state (None: nothing to write), each CR's status
(kstatus-style conditions), and VirtualKey key Secret bodies. No I/O, no clock of its own.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmgate_contract import CONFIGMAP_NAME, CREDENTIALS_SECRET_NAME, bundle_files
from llmgate_contract.budget import format_usd, period_bounds, usd_to_micros
from llmgate_contract.config import Budget

from llmgate_operator import api
from llmgate_operator.compile import Compilation, Condition
from llmgate_operator.keys import MANAGED_BY, MANAGED_BY_LABEL, ROTATE_ANNOTATION, format_time

if TYPE_CHECKING:  # a plain value type; importing it for real would pull in redis
    from llmgate_operator.spend import Reading

GENERATION_ANNOTATION = "llmgate.io/generation"
VIRTUAL_KEY_LABEL = "llmgate.io/virtual-key"
READY = "Ready"
EXPIRED = "Expired"
BUDGET_EXHAUSTED = "BudgetExhausted"

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


def config_objects(compilation: Compilation,
                   extra_credentials: Mapping[str, str] | None = None) -> tuple[Body, Body]:
    """The ConfigMap `llmgate-config` and Secret `llmgate-credentials` of one namespace
    (`extra_credentials`: Secret data besides the compiled files, e.g. the Redis password)."""
    config = compilation.config
    cm_data, secret_data = bundle_files(config, {**compilation.credentials,
                                                 **(extra_credentials or {})})
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


def _ms_time(ms: int) -> str:
    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def spend_status(reading: Reading, budget: Budget, current: Mapping[str, Any] | None) -> Body:
    """`status.spend` {amount, limit, periodStart, updatedAt}: decimal USD strings, RFC 3339.

    `updatedAt` is when these values were read; it stays as it is while they do not change,
    so an unchanged spend never rewrites the status.
    """
    spend: Body = {"amount": format_usd(reading.spent_micros),
                   "limit": format_usd(usd_to_micros(budget.limit))}
    if reading.period_start_ms is not None:
        spend["periodStart"] = _ms_time(reading.period_start_ms)
    before = current or {}
    same = all(before.get(k) == spend.get(k) for k in ("amount", "limit", "periodStart"))
    spend["updatedAt"] = (before["updatedAt"] if same and before.get("updatedAt")
                          else format_time(reading.read_at))
    return spend


def budget_condition(
    reading: Reading, budget: Budget, *, generation: int | None,
    previous: Sequence[Mapping[str, Any]], now: datetime,
) -> Body:
    """`BudgetExhausted`: True once the period's spend reaches the limit (as the sidecar
    refuses then), with what was spent and when requests are accepted again."""
    limit = usd_to_micros(budget.limit)
    exhausted = reading.spent_micros >= limit
    spent = f"spent ${format_usd(reading.spent_micros)} of ${format_usd(limit)}"
    if reading.period_start_ms is None:
        since, until = "in total (lifetime budget)", "the limit is raised"
    else:
        end = period_bounds(reading.period, reading.period_start_ms)[1]
        since = f"since {_ms_time(reading.period_start_ms)} ({reading.period} period)"
        until = "the period ends at " + (_ms_time(end) if end is not None else "?")
    message = (f"{spent} {since}; requests are refused until {until}" if exhausted
               else f"{spent} {since}")
    return _condition(BUDGET_EXHAUSTED, exhausted,
                      "BudgetExhausted" if exhausted else "WithinBudget", message,
                      generation=generation, previous=previous, now=now)


def _virtual_key_status(
    compilation: Compilation, body: Mapping[str, Any], current: Mapping[str, Any],
    spend: Mapping[str, Reading], *, now: datetime,
) -> tuple[Body, list[Body], set[str]]:
    """A VirtualKey's own status fields, its extra conditions, and the condition types it
    owns (a type owned but not built is removed)."""
    name = body["metadata"]["name"]
    generation = body["metadata"].get("generation")
    previous = list(current.get("conditions") or [])
    condition = compilation.conditions.get(("VirtualKey", name))
    status: Body = {}
    conditions: list[Body] = []
    owned: set[str] = set()
    vk = next((k for k in compilation.config.virtual_keys if k.name == name), None)
    if vk is not None:
        status["keyPrefix"] = vk.key_prefix
        expired = bool(condition and condition.extra.get("expired"))
        conditions.append(_condition(
            EXPIRED, expired, "Expired" if expired else "NotExpired",
            f"the key expired at {vk.expires_at}" if expired
            else (f"the key expires at {vk.expires_at}" if vk.expires_at
                  else "the key does not expire"),
            generation=generation, previous=previous, now=now))
        reading = spend.get(name)
        if vk.budget is None:
            status["spend"] = None  # the budget was removed: so are its spend and condition
            owned.add(BUDGET_EXHAUSTED)
        elif reading is not None and reading.period == vk.budget.period:
            status["spend"] = spend_status(reading, vk.budget, current.get("spend"))
            conditions.append(budget_condition(reading, vk.budget, generation=generation,
                                               previous=previous, now=now))
        # else: no reading yet (or Redis down): the last spend status stays as it is.
    spec = body.get("spec") or {}
    status["secretName"] = (spec.get("secretName") if isinstance(spec, Mapping)
                            and isinstance(spec.get("secretName"), str)
                            else api.default_secret_name(name))
    return status, conditions, owned


def desired_status(
    compilation: Compilation, body: Mapping[str, Any], current: Mapping[str, Any], *,
    now: datetime, spend: Mapping[str, Reading] | None = None,
) -> Body:
    """The status fields llmgate owns for one CR (other condition types are kept).

    `spend` holds the namespace's latest spend readings by VirtualKey name."""
    kind, name = body["kind"], body["metadata"]["name"]
    generation = body["metadata"].get("generation")
    condition = compilation.conditions.get(
        (kind, name), Condition(False, "NotCompiled", "the resource was not compiled"))
    previous = list(current.get("conditions") or [])
    conditions = [ready_condition(condition, generation=generation, previous=previous, now=now)]
    status: Body = {}
    if kind == "LLMRoute":
        status["targets"] = list(condition.extra.get("targets", []))
    owned = {READY, EXPIRED}
    if kind == "VirtualKey":
        fields, extra, owns = _virtual_key_status(compilation, body, current, spend or {},
                                                  now=now)
        status |= fields
        conditions += extra
        owned |= owns
    owned |= {c["type"] for c in conditions}
    others = [c for c in previous if c.get("type") not in owned]
    status["conditions"] = conditions + others
    if generation is not None:
        status["observedGeneration"] = generation
    accepted = compilation.accepted.get((kind, name))
    if accepted is not None:
        status["lastGood"] = accepted
    return status


# Status fields llmgate writes and removes when they no longer apply; any other field is left
# alone. (`spend` is not here: without a reading it is kept, so a Redis outage or a restart
# never blanks it; `desired_status` removes it explicitly when the budget goes.)
OWNED_STATUS = frozenset({"conditions", "observedGeneration", "targets", "keyPrefix",
                          "secretName"})


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Body | None:
    """The merge patch of `status` (only the fields that differ), or None if nothing does.

    (`lastGood` is not owned either: an invalid spec leaves the last good one in place.)"""
    changed: Body = {k: merge_diff(current.get(k), v) for k, v in desired.items()
                     if current.get(k) != v}
    changed |= {k: None for k in OWNED_STATUS if k in current and k not in desired}
    if not changed:
        return None
    return {"status": changed}


def merge_diff(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) taking `current` to `desired`: objects recurse, keys
    that went away become null (a plain merge would keep them), everything else is replaced."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch = {k: None for k in current if k not in desired}
    patch |= {k: merge_diff(current.get(k), v) for k, v in desired.items()
              if current.get(k) != v}
    return patch


def _find(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def ready_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the Ready condition's status or reason differs (worth an Event)."""
    def key(status: Mapping[str, Any]) -> tuple[Any, Any] | None:
        cond = _find(status, READY)
        return (cond.get("status"), cond.get("reason")) if cond else None
    return key(current) != key(desired)


def budget_flip(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Body | None:
    """The new BudgetExhausted condition if it became True, or became False after being True
    (worth an Event); None otherwise (including a first, False, reading)."""
    after = _find(desired, BUDGET_EXHAUSTED)
    if after is None:
        return None
    before = _find(current, BUDGET_EXHAUSTED)
    was = before.get("status") if before else "False"
    return dict(after) if after.get("status") != was else None


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
