"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import ResourcesDep
from service.core.errors import ServiceUnavailableError

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """The database and Redis answer; 503 (so the pod leaves the Service) otherwise."""

    async def database() -> None:
        async with resources.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await resources.redis.ping()

    checks = {"database": database, "redis": redis}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2)
            results[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            results[name] = f"unavailable: {exc.__class__.__name__}"
    if any(value != "ok" for value in results.values()):
        raise ServiceUnavailableError("Not ready", details=results)
    return JSONResponse({"status": "ready", "checks": results})
