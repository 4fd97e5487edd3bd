"""Virtual-key issuing and rotation decisions (pure), and what the compile makes of them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from llmgate_operator import keys
from llmgate_operator.compile import compile_namespace

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
VK = {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
      "metadata": {"name": "svc", "namespace": "ns"}, "spec": {}}


def managed(data: dict[str, str], **annotations: str) -> keys.SecretView:
    return keys.SecretView(name="svc-llmgate-key", data=data,
                           labels={keys.MANAGED_BY_LABEL: keys.MANAGED_BY},
                           annotations=annotations)


def test_generated_keys_are_prefixed_long_and_unique() -> None:
    generated = {keys.generate_key() for _ in range(50)}
    assert len(generated) == 50
    assert all(k.startswith("lg-") and len(k) >= 46 for k in generated)


def test_a_missing_secret_or_key_gets_a_key_issued() -> None:
    assert keys.decide({}, None).action is keys.Action.ISSUE
    assert keys.decide({}, managed({"other": "x"})).action is keys.Action.ISSUE
    assert keys.decide({}, managed({"api-key": "  "})).action is keys.Action.ISSUE


def test_an_existing_key_is_kept_even_from_a_foreign_secret() -> None:
    foreign = keys.SecretView(name="vault-key", data={"api-key": "from-vault"})
    assert keys.decide({}, foreign).action is keys.Action.KEEP
    assert keys.decide({}, managed({"api-key": "lg-x"})).action is keys.Action.KEEP


def test_rotation_happens_once_per_annotation_value() -> None:
    asked = {keys.ROTATE_ANNOTATION: "2026-03"}
    assert keys.decide(asked, managed({"api-key": "lg-x"})).action is keys.Action.ROTATE
    done = managed({"api-key": "lg-y"}, **{keys.ROTATE_ANNOTATION: "2026-03"})
    assert keys.decide(asked, done).action is keys.Action.KEEP
    again = {keys.ROTATE_ANNOTATION: "2026-04"}
    assert keys.decide(again, done).action is keys.Action.ROTATE


def test_rotation_of_a_key_llmgate_does_not_manage_is_refused_with_a_reason() -> None:
    foreign = keys.SecretView(name="vault-key", data={"api-key": "from-vault"})
    decision = keys.decide({keys.ROTATE_ANNOTATION: "now"}, foreign)
    assert decision.action is keys.Action.KEEP
    assert decision.refused is not None and "vault-key" in decision.refused


def test_rotation_grace_default_custom_and_invalid() -> None:
    assert keys.rotation_grace({}) == (timedelta(hours=1), None)
    assert keys.rotation_grace({keys.GRACE_ANNOTATION: "30m"}) == (timedelta(minutes=30), None)
    grace, warning = keys.rotation_grace({keys.GRACE_ANNOTATION: "a while"})
    assert grace == timedelta(hours=1)
    assert warning is not None and "a while" in warning


def test_rotated_data_keeps_the_old_hash_until_the_grace_ends() -> None:
    data = keys.rotated_data({"api-key": "lg-old", "note": "kept"}, "lg-new", now=NOW,
                             grace=timedelta(minutes=10))
    assert data["api-key"] == "lg-new"
    assert data["note"] == "kept"
    assert data["previous-sha256"] == hashlib.sha256(b"lg-old").hexdigest()
    assert data["previous-not-after"] == "2026-03-01T12:10:00Z"

    def hashes(now: datetime) -> list[str]:
        compiled = compile_namespace("ns", [VK], {"svc-llmgate-key": data}, now=now)
        return [h.sha256 for h in compiled.config.virtual_keys[0].hashes]

    new, old = (hashlib.sha256(k.encode()).hexdigest() for k in ("lg-new", "lg-old"))
    assert hashes(NOW + timedelta(minutes=9)) == [new, old]
    assert hashes(NOW + timedelta(minutes=11)) == [new]


def test_issued_data_keeps_other_data_keys() -> None:
    assert keys.issued_data({"owner": "team-a"}, "lg-k") == {"owner": "team-a", "api-key": "lg-k"}
    assert keys.issued_data(None, "lg-k") == {"api-key": "lg-k"}
