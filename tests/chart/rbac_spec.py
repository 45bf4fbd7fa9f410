"""What the operator may do, written down once: the chart's RBAC must grant exactly this (the
render tests) and the API server must enforce it (the install tests)."""

from __future__ import annotations

CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")

# (apiGroup, resource, verb) the operator needs in every namespace it watches.
NAMESPACED: frozenset[tuple[str, str, str]] = frozenset(
    {("storefront.dev", "storefronts", v) for v in ("get", "list", "watch", "patch")}
    | {
        ("storefront.dev", sub, v)
        for sub in ("storefronts/status", "storefronts/scale")
        for v in ("get", "patch")
    }
    | {
        (group, resource, v)
        for group, resource in (
            ("apps", "deployments"),
            ("", "services"),
            ("", "configmaps"),
            ("batch", "jobs"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
            ("networking.k8s.io", "networkpolicies"),
            ("monitoring.coreos.com", "servicemonitors"),
        )
        for v in CHILD_VERBS
    }
    | {("", "secrets", "get"), ("", "secrets", "create"), ("", "events", "create")}
)

# Cluster-scoped reads: the CRDs (always), namespaces (only when watching all of them).
CRDS: frozenset[tuple[str, str, str]] = frozenset(
    ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")
)
NAMESPACES: frozenset[tuple[str, str, str]] = frozenset(
    ("", "namespaces", v) for v in ("list", "watch")
)
# Applying its own CRD at start (crds.applyFromOperator), restricted to that one CRD by name.
OWN_CRD = "storefronts.storefront.dev"
APPLY_OWN_CRD = ("apiextensions.k8s.io", "customresourcedefinitions", "patch")

# Things the operator must never be able to do.
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "secrets", "delete"),
    ("", "pods", "create"),
    ("", "pods", "delete"),
    ("storefront.dev", "storefronts", "delete"),
    ("storefront.dev", "storefronts", "create"),
    ("storefront.dev", "storefronts", "update"),
    ("rbac.authorization.k8s.io", "roles", "create"),
    ("apps", "daemonsets", "create"),
    ("apps", "deployments", "update"),
)

# Kopf peering (peering.enabled), cluster-scoped in every mode. The operator creates the shared
# object when it is missing (operator/storefront_operator/handlers.py `_join_peering`); Kopf
# watches every peering object (list, watch: it filters by name itself) and patches its
# keep-alive into its own (kopf/_core/engines/peering.py `touch`, `clean`), the release's
# object, the only one it may patch. Neither reads one by name (no `get`).
PEERING_GROUP = "kopf.dev"
PEERING_PLURAL = "clusterkopfpeerings"
PEERING_ANY: frozenset[tuple[str, str, str]] = frozenset(
    (PEERING_GROUP, PEERING_PLURAL, v) for v in ("list", "watch", "create")
)
PEERING_OWN: frozenset[tuple[str, str, str]] = frozenset(
    (PEERING_GROUP, PEERING_PLURAL, v) for v in ("patch",)
)
# With crds.applyFromOperator, Kopf's peering CRD is applied like the operator's own, by name; not
# being in the chart's crds/, its first apply is a create, which the API server authorizes as such.
PEERING_CRD = f"{PEERING_PLURAL}.{PEERING_GROUP}"
APPLY_PEERING_CRD: frozenset[tuple[str, str, str]] = frozenset(
    ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("create", "patch")
)
