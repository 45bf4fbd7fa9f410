"""``purge_idempotency_keys``: delete the idempotency keys whose time is up."""

from __future__ import annotations

from typing import Any

from service.services import idempotency
from worker.runtime import resources


async def purge_idempotency_keys() -> dict[str, Any]:
    res = await resources()
    return {"purged": await idempotency.purge_expired(res.sessions)}
