"""Two or more operator replicas, one active: Kopf's peering, its CRD, and who is in charge.

Kopf pauses every replica but the one with the highest priority, and pauses them all when two
share it; a priority from the start time, the earliest highest, keeps the replica that was
running in charge when another starts, and lets a standby take over as soon as the active one's
keep-alive expires. The operator's own loops (resync, autoscaling) follow Kopf's decision, which
Kopf announces only in its log: the tracker reads those lines.
"""

from __future__ import annotations

import logging
from typing import Any

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
PEERING_KIND = "ClusterKopfPeering"
PEERING_PLURAL = "clusterkopfpeerings"
PEERING_CRD_NAME = f"{PEERING_PLURAL}.{PEERING_GROUP}"
KOPF_PEERING_LOGGER = "kopf._core.engines.peering"
# A standby takes over at most this long after the active replica stopped renewing its record.
DEFAULT_LIFETIME = 20
# Milliseconds since the epoch fit in 42 bits until the year 2109: with 10 bits of tie-break
# the priority stays below 2**53, exact in every JSON reader.
_MS_BITS = 42
_TIE_BITS = 10


def priority(started_ms: int, tiebreak: int) -> int:
    """A replica's peering priority: the earlier it started, the higher; `tiebreak` (random,
    below 1024) separates replicas started in the same millisecond, which Kopf would otherwise
    both pause."""
    age = (1 << _MS_BITS) - 1 - started_ms
    return (age << _TIE_BITS) | (tiebreak & ((1 << _TIE_BITS) - 1))


def pause_signal(message: str) -> bool | None:
    """True when a Kopf peering log line says this operator pauses, False when it resumes,
    None for any other line."""
    if message.startswith(("Pausing operations in favour of", "Pausing all operators")):
        return True
    if message.startswith("Resuming operations after the pause"):
        return False
    return None


class PauseTracker(logging.Filter):
    """Follows Kopf's peering decisions from its log records (a filter on its peering logger);
    `active` is what the operator's own loops check. Records below `level` are read, then
    dropped, so the log keeps the operator's configured level."""

    def __init__(self, peering: bool, level: int = logging.INFO) -> None:
        super().__init__()
        # With mandatory peering Kopf starts paused until it has seen the peers.
        self.paused = peering
        self.level = level

    @property
    def active(self) -> bool:
        return not self.paused

    def filter(self, record: logging.LogRecord) -> bool:
        signal = pause_signal(record.getMessage())
        if signal is not None:
            self.paused = signal
        return record.levelno >= self.level

    def install(self) -> None:
        """Attach to Kopf's peering logger, which must let INFO through for the tracker."""
        logger = logging.getLogger(KOPF_PEERING_LOGGER)
        logger.setLevel(logging.INFO)
        logger.addFilter(self)

    def uninstall(self) -> None:
        logging.getLogger(KOPF_PEERING_LOGGER).removeFilter(self)


def peering_crd() -> dict[str, Any]:
    """Kopf's cluster-wide peering CRD: each replica keeps its record (priority, last seen) in
    the object's status, written through the main resource, so no status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": PEERING_CRD_NAME},
        "spec": {
            "group": PEERING_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": PEERING_KIND,
                "plural": PEERING_PLURAL,
                "singular": PEERING_KIND.lower(),
            },
            "versions": [
                {
                    "name": PEERING_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def peering_object(name: str) -> dict[str, Any]:
    """The peering object the replicas share (Kopf needs it to exist; the operator creates it)."""
    return {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": PEERING_KIND,
        "metadata": {"name": name},
    }
