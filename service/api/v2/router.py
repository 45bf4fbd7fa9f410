"""Version 2: cursor pagination for catalogue reads, included on the app under ``/api/v2``
(one level of routers, as in version 1)."""

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, params

from service.api.v2 import products

PREFIX = "/api/v2"
ROUTERS: tuple[APIRouter, ...] = (products.router,)


def include_in(
    app: FastAPI,
    dependencies: Sequence[params.Depends] = (),
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> None:
    """Include every router; ``dependencies`` (and their ``responses``) guard all its routes."""
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX, dependencies=dependencies, responses=responses)
