"""The operator's only door to the Kubernetes API (official sync client, run in threads).

`reconcile`, `secretwatch`, `handlers` and `main` call `Kube`'s coroutines; every request is
a plain-dict REST call through `kubernetes.client.ApiClient` inside `asyncio.to_thread`, so
nothing blocks the event loop; long-lived watch streams go through aiohttp with the same
credentials (a thread per stream would exhaust the default executor). Failures raise
`KubeError` (`NotFound`, `Forbidden`, `Conflict`, `Unavailable`); turning them into kopf
errors is the handlers' job, not this module's. Writes use create + merge patch (never PUT).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kubernetes.client
import kubernetes.config
import urllib3
from llmgate_contract import CONFIGMAP_NAME

from llmgate_operator.group import API_VERSION
from llmgate_operator.keys import MANAGED_BY, MANAGED_BY_LABEL

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "llmgate-operator"
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
CRD_GROUP_VERSION = f"/apis/{API_VERSION}"
PEERING_GROUP_VERSION = "/apis/kopf.dev/v1"
# Metadata only (no `data`): what the Secret watches ask for.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Body = dict[str, Any]


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(KubeError):
    """404: the object (or its kind) does not exist."""


class Forbidden(KubeError):
    """403: RBAC does not allow it (e.g. Secrets of a namespace that granted nothing)."""


class Conflict(KubeError):
    """409: it already exists, or someone changed it first."""


class Unavailable(KubeError):
    """The API server could not be reached, or answered 5xx / 429."""


@dataclass(frozen=True)
class Connection:
    """An explicit API endpoint (tests, `kubectl proxy`); kopf logs in with the same one."""

    server: str
    token: str | None = None
    insecure: bool = False
    ca_path: str | None = None


def _error(status: int, raw: bytes) -> KubeError:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        doc = {}
    reason = str(doc.get("reason") or "")
    message = str(doc.get("message") or raw[:200].decode(errors="replace"))
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 403:
        return Forbidden(status, reason or "Forbidden", message)
    if status == 409:
        return Conflict(status, reason or "Conflict", message)
    if status >= 500 or status == 429:
        return Unavailable(status, reason or "ServerError", message)
    return KubeError(status, reason or "Error", message)


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def crd_path(namespace: str, plural: str, name: str, subresource: str | None = None) -> str:
    path = f"{CRD_GROUP_VERSION}/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


class Kube:
    """Async facade over one `ApiClient`; safe to share across tasks."""

    def __init__(self, api: kubernetes.client.ApiClient, connection: Connection | None = None):
        self._api = api
        self.connection = connection
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account first, then the kubeconfig (like kubectl)."""
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config)
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=config)
            except (kubernetes.config.ConfigException, OSError) as exc:
                raise Unavailable(0, "NoCredentials", "neither an in-cluster service account "
                                  f"nor a usable kubeconfig: {exc}") from None
        return cls(kubernetes.client.ApiClient(config))

    @classmethod
    def for_connection(cls, connection: Connection) -> Kube:
        config = kubernetes.client.Configuration(host=connection.server.rstrip("/"))
        config.verify_ssl = not connection.insecure
        if connection.ca_path:
            config.ssl_ca_cert = connection.ca_path
        if connection.token:
            config.api_key = {"BearerToken": connection.token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(kubernetes.client.ApiClient(config), connection)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        """Close the watch session too (the REST client is closed by `close`)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.close()

    # -- the one REST primitive -------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None,
              content_type: str = "application/json",
              query: Mapping[str, str] | None = None, accept: str = "application/json") -> Body:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": accept, "Content-Type": content_type}
        m, url, hdrs, payload, _ = self._api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            response = self._api.call_api(m, url, hdrs, payload,
                                          _request_timeout=REQUEST_TIMEOUT)
            raw = response.read() or b""  # type: ignore[no-untyped-call]
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(0, "Unreachable", str(exc)) from None
        if not 200 <= response.status < 300:
            raise _error(response.status, raw)
        doc = json.loads(raw) if raw.strip() else {}
        return doc if isinstance(doc, dict) else {"value": doc}

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      query: Mapping[str, str] | None = None,
                      accept: str = "application/json") -> Body:
        return await asyncio.to_thread(self._call, method, path, body, content_type, query,
                                       accept)

    # -- metadata-only list and watch (the Secret watches) ----------------------------------

    async def list_metadata(self, namespace: str, plural: str) -> Body:
        """`PartialObjectMetadataList` of one namespace's objects: names and versions only."""
        return await self.request("GET", core_path(namespace, plural), accept=METADATA_LIST)

    def _watch_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _watch_ssl(self) -> ssl.SSLContext | bool:
        config = self._api.configuration
        if not config.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file or None)
        return context

    async def watch_metadata(self, namespace: str, plural: str, since: str, *,
                             timeout_seconds: int) -> AsyncIterator[Body]:
        """Watch events (`type`, metadata-only `object`) after `since`, until the server ends
        the stream (`timeout_seconds`). A 410 arrives as an `ERROR` event; HTTP errors raise."""
        config = self._api.configuration
        token = config.get_api_key_with_prefix("BearerToken")  # refreshes in-cluster tokens
        headers = {"Accept": METADATA_WATCH, **({"Authorization": token} if token else {})}
        query = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        url = f"{config.host.rstrip('/')}{core_path(namespace, plural)}?{urlencode(query)}"
        timeout = aiohttp.ClientTimeout(sock_connect=REQUEST_TIMEOUT[0],
                                        sock_read=timeout_seconds + REQUEST_TIMEOUT[1])
        try:
            async with self._watch_session().get(url, headers=headers, timeout=timeout,
                                                 ssl=self._watch_ssl()) as response:
                if response.status != 200:
                    raise _error(response.status, await response.read())
                # Split lines by hand: aiohttp's readline refuses lines over 64 KiB, and a
                # kubectl-applied Secret's annotations can be that long.
                pending = b""
                async for chunk in response.content.iter_any():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        event = json.loads(line) if line.strip() else None
                        if isinstance(event, dict):
                            yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(0, "Unreachable", f"watch of {plural} in {namespace}: "
                              f"{exc!r}") from None

    async def get(self, path: str) -> Body | None:
        """The object at `path`, or None if it does not exist."""
        try:
            return await self.request("GET", path)
        except NotFound:
            return None

    async def patch(self, path: str, patch: Mapping[str, Any]) -> Body:
        return await self.request("PATCH", path, dict(patch), content_type=MERGE_PATCH,
                                  query={"fieldManager": FIELD_MANAGER})

    # -- objects the operator owns --------------------------------------------------------

    async def read_object(self, namespace: str, plural: str, name: str) -> Body | None:
        return await self.get(core_path(namespace, plural, name))

    async def create_object(self, namespace: str, plural: str, body: Mapping[str, Any]) -> Body:
        """Create a core object; raises `Conflict` if it exists."""
        return await self.request("POST", core_path(namespace, plural), dict(body),
                                  query={"fieldManager": FIELD_MANAGER})

    async def patch_object(self, namespace: str, plural: str, name: str,
                           patch: Mapping[str, Any]) -> Body:
        return await self.patch(core_path(namespace, plural, name), patch)

    async def patch_status(self, namespace: str, plural: str, name: str,
                           patch: Mapping[str, Any]) -> Body:
        """Merge-patch a llmgate CR's `status` subresource (never its spec)."""
        return await self.patch(crd_path(namespace, plural, name, "status"), patch)

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str,
                         message: str, now: datetime | None = None) -> None:
        """A core/v1 Event on `involved` (a CR body); Events are best effort by nature."""
        meta = involved["metadata"]
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                         "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion"),
                               "kind": involved.get("kind"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        await self.request("POST", core_path(meta["namespace"], "events"), event)

    # -- webhook plumbing ----------------------------------------------------------------

    async def read_webhook_config(self, name: str) -> Body | None:
        return await self.get(f"{MWC_PATH}/{quote(name)}")

    async def patch_ca_bundle(self, name: str, ca_bundle_b64: str) -> bool:
        """Set `caBundle` on every webhook of the MWC; False if it is missing or already set."""
        mwc = await self.read_webhook_config(name)
        if mwc is None:
            return False
        webhooks = mwc.get("webhooks") or []
        if all((w.get("clientConfig") or {}).get("caBundle") == ca_bundle_b64 for w in webhooks):
            return False
        ops: list[Body] = [{"op": "test", "path": "/metadata/resourceVersion",
                            "value": mwc["metadata"].get("resourceVersion")}]
        for i, webhook in enumerate(webhooks):
            if "clientConfig" not in webhook:
                ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig", "value": {}})
            ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle",
                        "value": ca_bundle_b64})
        await self.request("PATCH", f"{MWC_PATH}/{quote(name)}", ops,
                           content_type="application/json-patch+json")
        return True

    async def read_secret(self, namespace: str, name: str) -> Body | None:
        return await self.read_object(namespace, "secrets", name)

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> Body:
        return await self.create_object(namespace, "secrets", body)

    async def namespaces_with_config(self, namespaces: tuple[str, ...] = ()) -> set[str]:
        """Namespaces holding a ConfigMap `llmgate-config` that llmgate manages."""
        query = {"labelSelector": f"{MANAGED_BY_LABEL}={MANAGED_BY}"}
        paths = ([core_path(ns, "configmaps") for ns in namespaces] if namespaces
                 else ["/api/v1/configmaps"])
        if not namespaces and not await self.allowed("list", "configmaps"):
            raise Forbidden(403, "Forbidden", "ConfigMaps are not listable cluster-wide "
                            "(they are granted per namespace)")
        found: set[str] = set()
        for path in paths:
            listing = await self.request("GET", path, query=query)
            for item in listing.get("items") or []:
                meta = item.get("metadata") or {}
                # Filtered again here: a selector is a hint some servers (and fakes) ignore.
                if (meta.get("name") == CONFIGMAP_NAME
                        and (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY):
                    found.add(meta.get("namespace", ""))
        return found - {""}

    async def read_peering(self, name: str, namespace: str | None = None) -> Body | None:
        """kopf's peering object: cluster-wide, or the one in `namespace`."""
        if namespace is None:
            return await self.get(f"{PEERING_GROUP_VERSION}/clusterkopfpeerings/{quote(name)}")
        return await self.get(f"{PEERING_GROUP_VERSION}/namespaces/{quote(namespace)}"
                              f"/kopfpeerings/{quote(name)}")

    async def allowed(self, verb: str, plural: str, namespace: str | None = None) -> bool:
        """SelfSubjectAccessReview (what `kubectl auth can-i` asks); True when it cannot be
        asked, so the caller tries and handles a refusal as before."""
        attributes = {"verb": verb, "resource": plural, "group": ""}
        if namespace:
            attributes["namespace"] = namespace
        try:
            review = await self.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                 "spec": {"resourceAttributes": attributes}})
        except KubeError:
            return True
        status = review.get("status")
        return not isinstance(status, dict) or bool(status.get("allowed"))

    async def has_resources(self, namespace: str, group: str, version: str,
                            plurals: Iterable[str]) -> bool:
        """Whether any object of these custom resources exists in `namespace`."""
        for plural in plurals:
            path = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}"
            listing = await self.request("GET", path, query={"limit": "1"})
            if listing.get("items"):
                return True
        return False

    async def server_version(self) -> Body:
        """`/version` (gitVersion, major, minor): decides native vs regular sidecars."""
        return await self.request("GET", "/version")
