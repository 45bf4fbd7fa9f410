"""Version 2: cursor pagination for catalogue reads, included on the app under ``/api/v2``
(one level of routers, as in version 1)."""

from fastapi import APIRouter, FastAPI

from service.api.v2 import products

PREFIX = "/api/v2"
ROUTERS: tuple[APIRouter, ...] = (products.router,)


def include_in(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
