"""The operator's glue to Kopf: peering priorities and pause signals, how Kopf's requests are
labelled, which of Kopf's log lines are dropped."""

from __future__ import annotations

import logging

from storefront_operator.handlers import QuietWatchHandlers
from storefront_operator.kopf_requests import describe, resource_of
from storefront_operator.metrics import outcome
from storefront_operator.peering import PauseTracker, pause_signal, priority


def test_the_earliest_started_replica_has_the_highest_priority() -> None:
    assert priority(1_000, 0) > priority(2_000, 1023)
    assert priority(1_000, 1) != priority(1_000, 2)
    assert priority(4_102_444_800_000, 1023) < 2**53  # exact in JSON until 2100 at least


def test_pause_signals_from_kopf_log_lines() -> None:
    assert pause_signal("Pausing operations in favour of [<Peer x>].") is True
    assert pause_signal("Pausing all operators, including self: [...]") is True
    assert pause_signal("Resuming operations after the pause.") is False
    assert pause_signal("Handler succeeded.") is None

    tracker = PauseTracker(peering=True, level=logging.WARNING)
    assert not tracker.active
    record = logging.LogRecord(
        "kopf", logging.INFO, "", 0, "Resuming operations after the pause.", None, None
    )
    assert tracker.filter(record) is False  # read, then dropped below the configured level
    assert tracker.active


def test_kopf_requests_are_labelled_by_kubernetes_verb() -> None:
    watch = "https://k/apis/apps/v1/deployments?watch=true&labelSelector=x"
    assert describe("GET", watch) == ("watch", "/apis/apps/v1/deployments")
    assert describe("GET", "https://k/apis/apps/v1/deployments") == ("get", None)
    assert describe("PATCH", "https://k/x") == ("patch", None)
    assert resource_of("/apis/apps/v1/namespaces/x/deployments") == "deployments"
    assert [outcome(s) for s in (0, 200, 404, 409, 422, 503)] == [
        "unreachable",
        "success",
        "not_found",
        "conflict",
        "client_error",
        "server_error",
    ]


def test_watch_handler_successes_are_not_logged() -> None:
    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, "", 0, msg, None, None)

    quiet = QuietWatchHandlers()
    assert not quiet.filter(record(logging.INFO, "Handler 'child-services' succeeded."))
    assert not quiet.filter(record(logging.INFO, "Handler 'storefront_event' succeeded."))
    assert quiet.filter(record(logging.INFO, "Handler 'reconcile_handler' succeeded."))
    assert quiet.filter(record(logging.ERROR, "Handler 'child-services' failed."))
