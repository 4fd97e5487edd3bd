"""Group 6: garbage collection and cleanup by the real controller manager.

Deleting a VirtualKey lets the garbage collector remove its key Secret (owner reference);
deleting every CR of a namespace leaves what docs/install.md describes (the two config
objects, emptied); deleting the namespace finishes (nothing of ours blocks it) and nothing
comes back afterwards.
"""

from __future__ import annotations

import time

from llmgate_contract import CONFIGMAP_NAME, CREDENTIALS_SECRET_NAME

from tests.cluster.api import Api, eventually, path, path_of
from tests.cluster.release import Operators
from tests.cluster.workloads import bundle, example, is_cr, namespace, wait_ready

GENERATED = {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
             "metadata": {"name": "generated"}, "spec": {}}


def test_deleting_a_virtual_key_removes_its_key_secret(admin: Api,
                                                       operators: Operators) -> None:
    ns = namespace(admin, "gc-key")
    docs = [GENERATED]
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    assert admin.get(path("Secret", ns, "generated-llmgate-key")) is not None
    admin.delete(path("VirtualKey", ns, "generated"))
    eventually(lambda: admin.get(path("Secret", ns, "generated-llmgate-key")) is None,
               what="the key Secret collected by the garbage collector")
    eventually(lambda: (b := bundle(admin, ns)) and not b.config.virtual_keys,
               what="the key gone from the compiled config")


def test_deleting_every_cr_leaves_an_empty_config(admin: Api, operators: Operators) -> None:
    ns = namespace(admin, "gc-crs")
    docs = [*example("quickstart.yaml"), GENERATED]
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    for doc in docs:
        if is_cr(doc):
            admin.delete(path_of(doc, ns))
    emptied = eventually(
        lambda: (b := bundle(admin, ns)) and not (b.config.routes or b.config.providers
                                                  or b.config.virtual_keys) and b,
        what="the namespace's config emptied")
    assert emptied.config.namespace == ns
    assert admin.get(path("ConfigMap", ns, CONFIGMAP_NAME)) is not None
    assert admin.get(path("Secret", ns, CREDENTIALS_SECRET_NAME)) is not None
    # Generated key Secrets go with their VirtualKeys; a key Secret the user made stays.
    eventually(lambda: admin.get(path("Secret", ns, "generated-llmgate-key")) is None,
               what="the generated key Secret collected")
    assert admin.get(path("Secret", ns, "demo-llmgate-key")) is not None


def test_deleting_the_namespace_leaves_nothing_behind(admin: Api,
                                                      operators: Operators) -> None:
    ns = namespace(admin, "gc-namespace")
    docs = example("quickstart.yaml")
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    admin.delete(path("Namespace", name=ns))
    eventually(lambda: admin.get(path("Namespace", name=ns)) is None,
               what="the namespace deleted (no finalizer of ours holds it)", timeout=90)
    time.sleep(3)  # an operator that recreated objects would have done it by now
    assert admin.get(path("Namespace", name=ns)) is None
    leftovers = [item for kind in ("ConfigMap", "Secret", "VirtualKey", "LLMRoute")
                 for item in admin.items(kind, None)
                 if item["metadata"].get("namespace") == ns]
    assert leftovers == []
