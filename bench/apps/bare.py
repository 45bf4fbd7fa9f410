"""Baseline 1, bare FastAPI: Storefront's benchmarked routes (two reads and order creation) with
no middleware, no metrics, no tracing and no logging, so it measures the framework and the I/O
alone."""

from __future__ import annotations

from fastapi import FastAPI

from bench.apps import orders
from bench.apps.common import lifespan, router


def create_app() -> FastAPI:
    # FastAPI's native telemetry is switched off exactly as Storefront switches it off.
    app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})
    app.include_router(router)
    app.include_router(orders.router)
    return app
