"""Version 1: one router aggregating every domain's sub-router."""

from fastapi import APIRouter

from service.api.v1 import admin, events, jobs, orders, products, reports, users

router = APIRouter(prefix="/api/v1")
for module in (users, admin, products, orders, reports, events, jobs):
    router.include_router(module.router)
