"""Request IDs: incoming ones kept when well formed, new ones random version-4 UUIDs."""

from __future__ import annotations

import multiprocessing
import uuid

from service.observability.context import accept_request_id, new_request_id


def test_new_request_ids_are_distinct_version_4_uuids() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert len(request_id) == 32 and parsed.hex == request_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def _child_ids(connection: multiprocessing.connection.Connection) -> None:
    connection.send([new_request_id() for _ in range(100)])


def test_a_forked_process_does_not_repeat_its_parents_ids() -> None:
    new_request_id()  # the parent's generator is in use before the fork
    parent_end, child_end = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_child_ids, args=(child_end,))
    child.start()
    from_child = set(parent_end.recv())
    child.join(10)
    from_parent = {new_request_id() for _ in range(100)}
    assert len(from_child) == 100 and not from_child & from_parent


def test_a_well_formed_incoming_id_is_kept_and_anything_else_replaced() -> None:
    assert accept_request_id(b"order-sync:42.a") == "order-sync:42.a"
    for bad in (None, b"", b"has space", b"\xff\xfe", "x" * 129, b"-leading-dash"):
        replaced = accept_request_id(bad)
        assert uuid.UUID(replaced).version == 4
