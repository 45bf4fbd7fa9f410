"""The operator's Kubernetes I/O: a thin synchronous client (server-side apply, get, list, delete,
status patches, Events) over the official `kubernetes` package; handlers call it in threads."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from urllib3.exceptions import InsecureRequestWarning

from storefront_operator import metrics
from storefront_operator.render import GENERATED_SECRET_KEYS, MANAGER, Manifest
from storefront_operator.spec import API_VERSION, KIND, PLURAL

# Kinds the operator creates, and the plural each is served under.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    (API_VERSION, KIND): PLURAL,
}
# Children pruned when no longer desired (ServiceMonitor only when its CRD exists).
PRUNABLE: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
# Kinds whose status the Storefront's status is computed from: listed whole by a resync, the
# others as metadata only (dashboard ConfigMaps alone weigh tens of kilobytes each).
WITH_STATUS = frozenset({"Deployment", "Job"})
METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
LIST_PAGE = 500
CRD_TTL = 30.0  # seconds a CRD's presence is taken as known
_insecure_told = False


class KubeError(RuntimeError):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


def load_api_client() -> client.ApiClient:
    """In-cluster service account, else the kubeconfig named by $KUBECONFIG (read now, not at
    import, so tests and `--kubeconfig`-style wrappers can set it late)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
    except config.ConfigException:
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        api = config.new_client_from_config(config_file=path.split(os.pathsep)[0])
    if not api.configuration.verify_ssl:
        tell_insecure_once(api.configuration.host)
    return api


def tell_insecure_once(host: str) -> None:
    """Say once that the API server's certificate is not verified. urllib3 warns on every
    request (its SecurityWarning filter is "always"), which through the log pipeline is one
    warning line per API call."""
    global _insecure_told
    warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    if not _insecure_told:
        _insecure_told = True
        logging.getLogger("storefront.operator").warning(
            "TLS certificate of the API server at %s is not verified "
            "(insecure-skip-tls-verify in the kubeconfig): use its CA in production",
            host,
        )


def path_for(
    api_version: str, kind: str, namespace: str | None = None, name: str | None = None
) -> str:
    plural = PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


class Kube:
    """Synchronous Kubernetes calls the handlers need, returning plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None, timeout: float = 30) -> None:
        self.api = api_client or load_api_client()
        self.timeout = timeout
        self._crds: dict[str, tuple[float, bool]] = {}  # name -> (when seen, installed)

    def close(self) -> None:
        self.api.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
        accept: str = "application/json",
        verb: str | None = None,
    ) -> dict[str, Any]:
        """One API call; `verb` (Kubernetes' name for it: get, list, create, patch, apply,
        delete) labels the request metric, else the HTTP method does."""
        try:
            payload = self._request(method, path, body, query, content_type, accept)
        except KubeError as exc:
            metrics.count_api_request("operator", verb or method.lower(), exc.status)
            raise
        metrics.count_api_request("operator", verb or method.lower(), 200)
        return payload

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        query: Iterable[tuple[str, str]],
        content_type: str,
        accept: str,
    ) -> dict[str, Any]:
        serialized = self.api.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            response.read()
        except Exception as exc:  # connection refused, TLS, timeouts: no HTTP status
            raise KubeError(0, str(exc), exc.__class__.__name__) from exc
        data = response.data or b""
        try:
            payload: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:  # some errors (a discovery 404) are plain text
            payload = {"message": data[:500].decode(errors="replace")}
        if not 200 <= response.status < 300:
            raise KubeError(
                response.status, str(payload.get("message", data[:500])), payload.get("reason", "")
            )
        return payload

    # -- generic objects ----------------------------------------------------------------------
    def apply(self, manifest: Manifest) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields
        (a hand edit of a field we own is drift and is undone)."""
        meta = manifest["metadata"]
        path = path_for(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        return self.request(
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
            verb="apply",
        )

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return self.request("GET", path_for(api_version, kind, namespace, name), verb="get")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items()))]
        items = self.request(
            "GET", path_for(api_version, kind, namespace), query=query, verb="list"
        )
        return list(items.get("items") or [])

    def list_selected(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        selector: str,
        metadata_only: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every object of a kind matching a label selector string, in one namespace or all,
        page by page; with `metadata_only`, their metadata alone (managedFields included),
        each given back its own apiVersion and kind."""
        accept = METADATA_LIST if metadata_only else "application/json"
        token = ""
        while True:
            query = [("labelSelector", selector), ("limit", str(LIST_PAGE))]
            if token:
                query.append(("continue", token))
            page = self.request(
                "GET",
                path_for(api_version, kind, namespace),
                query=query,
                accept=accept,
                verb="list",
            )
            for item in page.get("items") or []:
                yield {**item, "apiVersion": api_version, "kind": kind}
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.request(
                "DELETE",
                path_for(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
                verb="delete",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    def crd_exists(self, name: str) -> bool:
        """Whether a CRD is installed, as seen in the last `CRD_TTL` seconds: every reconcile
        asks (for the ServiceMonitor CRD), and a CRD installed later is picked up soon enough."""
        now = time.monotonic()
        seen = self._crds.get(name)
        if seen is not None and now - seen[0] < CRD_TTL:
            return seen[1]
        try:
            self.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", verb="get"
            )
            exists = True
        except KubeError as exc:
            if exc.status != 404:
                raise
            exists = False
        self._crds[name] = (now, exists)
        return exists

    def apply_crd(self, manifest: Manifest) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        return self.request(
            "PATCH",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
            body=manifest,
            query=[("fieldManager", MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
            verb="apply",
        )

    def create_if_missing(self, path: str, body: Mapping[str, Any]) -> bool:
        """POST `body` to the collection at `path`; False when it already existed."""
        try:
            self.request("POST", path, body=dict(body), verb="create")
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def wait_crd_served(self, manifest: Manifest, timeout: float = 60) -> bool:
        """Wait until the CRD is Established and its version is in discovery: kopf resolves
        resources once at start, so a CRD it cannot see yet would not be watched."""
        name = manifest["metadata"]["name"]
        group = manifest["spec"]["group"]
        plural = manifest["spec"]["names"]["plural"]
        versions = [v["name"] for v in manifest["spec"]["versions"] if v.get("served")]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                crd = self.request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                conditions = {
                    c.get("type"): c.get("status")
                    for c in (crd.get("status") or {}).get("conditions") or []
                }
                served = all(
                    any(
                        r.get("name") == plural
                        for r in self.request("GET", f"/apis/{group}/{v}").get("resources", [])
                    )
                    for v in versions
                )
                if conditions.get("Established") == "True" and served:
                    return True
            except KubeError:
                pass  # not yet: discovery answers 404 until the group is served
            time.sleep(0.5)
        return False

    # -- the Storefront itself ----------------------------------------------------------------
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource (no generation bump, no handler re-trigger)."""
        self.request(
            "PATCH",
            path_for(API_VERSION, KIND, namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
            verb="patch",
        )

    def set_worker_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """What `kubectl scale sf/<name>` does: write spec.worker.replicas via /scale."""
        self.request(
            "PATCH",
            path_for(API_VERSION, KIND, namespace, name) + "/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
            verb="patch",
        )

    # -- secrets ------------------------------------------------------------------------------
    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value of one Secret key; None when the Secret or the key is missing."""
        return (self.secret_data(namespace, name) or {}).get(key)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """Every key of a Secret, decoded; None when the Secret is missing."""
        secret = self.get("v1", "Secret", namespace, name)
        if secret is None:
            return None
        values = {k: str(v) for k, v in (secret.get("stringData") or {}).items()}
        for k, raw in (secret.get("data") or {}).items():
            values[k] = base64.b64decode(raw).decode()
        return values

    def ensure_generated_secret(
        self, namespace: str, name: str, owner: Mapping[str, Any], labels: Mapping[str, str]
    ) -> None:
        """Create the instance's generated Secret once; never rotate it behind the user's back."""
        if self.get("v1", "Secret", namespace, name) is not None:
            return
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels),
                "ownerReferences": [dict(owner)],
            },
            "type": "Opaque",
            "stringData": {key: secrets.token_hex(32) for key in GENERATED_SECRET_KEYS},
        }
        try:
            self.request("POST", path_for("v1", "Secret", namespace), body=body, verb="create")
        except KubeError as exc:
            if exc.status != 409:  # created meanwhile by another reconcile: fine
                raise

    # -- events -------------------------------------------------------------------------------
    def post_event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the Storefront, as `kubectl describe sf` shows them."""
        meta = body["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", path_for("v1", "Event", meta["namespace"]), body=event, verb="create")


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """Owner reference to the Storefront: children are garbage-collected with it."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_owner(manifest: Manifest, owner: Mapping[str, Any]) -> Manifest:
    meta = {**manifest["metadata"], "ownerReferences": [dict(owner)]}
    return {**manifest, "metadata": meta}
