"""Which child events call for a reconcile: pure functions over the children's metadata.

A child is drifted when someone else changed a field the operator applied (its server-side
apply entry in `managedFields` no longer holds what the operator's last apply left there) or
deleted it; a Deployment or Job whose observed status changed feeds the Storefront's status.
Everything else, the operator's own writes first of all, is ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from storefront_operator.render import MANAGER
from storefront_operator.spec import GROUP, KIND
from storefront_operator.status import migration_state

ChildKey = tuple[str, str, str]
"""(apiVersion, kind, name): a child within its instance's namespace."""
DEPLOYMENT_STATUS = ("observedGeneration", "readyReplicas", "updatedReplicas", "availableReplicas")
Verdict = Literal["matches", "changed", "deleted", "status", "unknown"]
"""What one event says about a child, against the instance's last applied state."""
PRECEDENCE: tuple[Verdict, ...] = ("deleted", "changed", "status")
"""The verdicts that call for a reconcile, the most telling first."""


@dataclass(frozen=True)
class ChildState:
    """A child as the operator last applied or observed it."""

    uid: str
    fields: str | None
    """Fingerprint of the fields the operator's server-side apply owns."""
    status: str | None = None
    """Digest of the status the Storefront's status is computed from (Deployments, Jobs)."""


@dataclass(frozen=True)
class Applied:
    """One instance's children after its last reconcile: what a drift is measured against."""

    children: Mapping[ChildKey, ChildState] = field(default_factory=dict)


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    meta = obj.get("metadata") or {}
    return str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("name", ""))


def owner_name(obj: Mapping[str, Any]) -> str | None:
    """The Storefront that controls this object (its controller owner reference), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        api_version = str(ref.get("apiVersion", ""))
        if (
            ref.get("controller")
            and ref.get("kind") == KIND
            and api_version.split("/", 1)[0] == GROUP
        ):
            return str(ref.get("name"))
    return None


def applied_fields(obj: Mapping[str, Any], manager: str = MANAGER) -> str | None:
    """Fingerprint of the fields `manager` owns by server-side apply on the object itself (not
    on a subresource). Another writer changing one of them takes it over, so the fingerprint
    changes; their writes to other fields, and status updates, leave it as it was."""
    entries = [
        entry.get("fieldsV1")
        for entry in (obj.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    ]
    if not entries:
        return None
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def status_digest(obj: Mapping[str, Any]) -> str | None:
    """The part of a Deployment's or Job's status the Storefront's status is computed from."""
    kind = obj.get("kind")
    if kind == "Deployment":
        status = obj.get("status") or {}
        seen: Any = [
            (obj.get("metadata") or {}).get("generation"),
            (obj.get("spec") or {}).get("replicas"),
            *(status.get(k) for k in DEPLOYMENT_STATUS),
        ]
    elif kind == "Job":
        seen = migration_state(obj)
    else:
        return None
    return json.dumps(seen, separators=(",", ":"))


def child_state(obj: Mapping[str, Any], with_status: bool = False) -> ChildState:
    meta = obj.get("metadata") or {}
    return ChildState(
        uid=str(meta.get("uid", "")),
        fields=applied_fields(obj),
        status=status_digest(obj) if with_status else None,
    )


def verdict(event_type: str | None, obj: Mapping[str, Any], applied: Applied | None) -> Verdict:
    """What a watch event on a child (`event_type` None for a listing) means for its owner."""
    if applied is None:
        return "unknown"  # not reconciled by this process yet: its first reconcile is coming
    known = applied.children.get(child_key(obj))
    seen = child_state(obj, with_status=True)
    if known is None or known.uid != seen.uid:
        # Not a child the last reconcile left (one it pruned, or a newer one's copy): nothing
        # to restore. A child deleted and re-created by someone else differs in uid: restore.
        return "changed" if known is not None and event_type != "DELETED" else "unknown"
    if event_type == "DELETED":
        return "deleted"
    if seen.fields != known.fields:
        return "changed"
    if known.status is not None and seen.status != known.status:
        return "status"
    return "matches"


def reconcile_reason(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The first verdict that calls for a reconcile, by precedence (deleted, changed, status)."""
    found = set(verdicts)
    return next((v for v in PRECEDENCE if v in found), None)


def children_match(
    applied: Applied | None, listed: Mapping[ChildKey, ChildState], kinds: Iterable[str]
) -> bool:
    """Whether the children listed now (only those of `kinds`) are the ones the last reconcile
    left: each present with its uid and the operator's fields, statuses as observed, no other
    child of this instance. Without a last reconcile nothing can be said: not a match."""
    if applied is None:
        return False
    wanted = set(kinds)
    expected = {k: v for k, v in applied.children.items() if k[1] in wanted}
    if set(listed) != set(expected):
        return False
    for key_, known in expected.items():
        seen = listed[key_]
        if seen.uid != known.uid or seen.fields != known.fields:
            return False
        if known.status is not None and seen.status is not None and seen.status != known.status:
            return False
    return True
