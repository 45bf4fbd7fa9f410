"""Drift verdicts: which child events call for a reconcile, from the children's metadata alone."""

from __future__ import annotations

from typing import Any

from storefront_operator.drift import (
    Applied,
    applied_fields,
    child_key,
    child_state,
    children_match,
    owner_name,
    reconcile_reason,
    verdict,
)
from storefront_operator.render import MANAGER

OWNER = {
    "apiVersion": "storefront.dev/v1alpha1",
    "kind": "Storefront",
    "name": "shop",
    "uid": "sf-1",
    "controller": True,
}


def child(
    kind: str = "Service",
    name: str = "shop-api",
    uid: str = "u-1",
    fields: dict[str, Any] | None = None,
    others: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A child as the API server returns it: the operator's apply entry in managedFields."""
    managed = [
        {
            "manager": MANAGER,
            "operation": "Apply",
            "fieldsV1": fields if fields is not None else {"f:spec": {"f:ports": {}}},
        },
        *(others or []),
    ]
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "uid": uid,
            "generation": 1,
            "ownerReferences": [OWNER],
            "managedFields": managed,
        },
        "spec": {"replicas": 1},
    }
    if status is not None:
        obj["status"] = status
    return obj


def applied(*objs: dict[str, Any]) -> Applied:
    return Applied({child_key(o): child_state(o, with_status=True) for o in objs})


def test_owner_is_the_controlling_storefront() -> None:
    assert owner_name(child()) == "shop"
    foreign = child()
    foreign["metadata"]["ownerReferences"] = [{**OWNER, "kind": "ReplicaSet"}]
    assert owner_name(foreign) is None
    not_controller = child()
    not_controller["metadata"]["ownerReferences"] = [{**OWNER, "controller": False}]
    assert owner_name(not_controller) is None


def test_the_operators_own_write_matches() -> None:
    obj = child()
    assert verdict("MODIFIED", obj, applied(obj)) == "matches"


def test_a_write_by_another_manager_to_other_fields_matches() -> None:
    # An annotation added by kubectl, a label by a policy engine: not the operator's fields.
    before = child()
    after = child(others=[{"manager": "kubectl-annotate", "operation": "Update", "fieldsV1": {}}])
    assert verdict("MODIFIED", after, applied(before)) == "matches"


def test_a_field_taken_over_by_someone_else_is_changed() -> None:
    before = child(fields={"f:spec": {"f:replicas": {}, "f:template": {}}})
    # kubectl edit of spec.replicas: the API server moves that field to kubectl's entry.
    after = child(
        fields={"f:spec": {"f:template": {}}},
        others=[{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {}}],
    )
    assert applied_fields(before) != applied_fields(after)
    assert verdict("MODIFIED", after, applied(before)) == "changed"


def test_deleted_and_recreated_children() -> None:
    obj = child()
    assert verdict("DELETED", obj, applied(obj)) == "deleted"
    # Re-created by someone else (a new uid): the operator's version is restored.
    assert verdict("ADDED", child(uid="u-2"), applied(obj)) == "changed"


def test_children_the_last_reconcile_did_not_leave_are_unknown() -> None:
    obj = child()
    assert verdict("MODIFIED", obj, None) == "unknown"  # not reconciled by this process yet
    assert verdict("DELETED", child(name="pruned"), applied(obj)) == "unknown"


def test_status_the_storefront_reports_on_counts() -> None:
    before = child("Deployment", "shop-api", status={"readyReplicas": 0})
    after = child("Deployment", "shop-api", status={"readyReplicas": 1})
    assert verdict("MODIFIED", after, applied(before)) == "status"
    # A Service's status is nobody's business here.
    assert verdict("MODIFIED", child(status={"x": 1}), applied(child())) == "matches"


def test_reason_by_precedence() -> None:
    assert reconcile_reason(["matches", "status", "deleted", "changed"]) == "deleted"
    assert reconcile_reason(["status", "changed"]) == "changed"
    assert reconcile_reason(["matches", "unknown"]) is None
    assert reconcile_reason([]) is None


def test_children_match_their_last_reconcile() -> None:
    svc, cm = child(), child("ConfigMap", "shop-config", uid="u-3")
    last = applied(svc, cm)
    listed = {child_key(o): child_state(o, with_status=True) for o in (svc, cm)}
    assert children_match(last, listed, ["Service", "ConfigMap"])
    # Only the kinds listed are compared.
    assert children_match(last, {child_key(svc): listed[child_key(svc)]}, ["Service"])
    assert not children_match(
        last, {child_key(svc): listed[child_key(svc)]}, ["Service", "ConfigMap"]
    )
    assert not children_match(None, listed, ["Service", "ConfigMap"])
    extra = child(name="stray", uid="u-9")
    assert not children_match(
        last, {**listed, child_key(extra): child_state(extra)}, ["Service", "ConfigMap"]
    )
    edited = child(fields={"f:metadata": {}})
    assert not children_match(
        last, {**listed, child_key(edited): child_state(edited)}, ["Service", "ConfigMap"]
    )
