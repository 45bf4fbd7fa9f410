"""The work the baseline apps do per request, the same as Storefront's: one Redis GET of the
cached product body, or the paginated product query serialized by the same schemas.

Both baselines read Storefront's settings (``STOREFRONT_*``) and open the engine and the Redis
client with Storefront's own constructors, so pool, pragmas and timeouts are identical too. They
tune the garbage collector as Storefront does when their settings ask for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from service.core.database import create_engine, create_session_factory
from service.core.redis import create_redis
from service.core.runtime import tune_garbage_collector
from service.core.settings import get_settings
from service.models import Product
from service.schemas.common import Page
from service.schemas.product import ProductOut
from service.services.products import cache_key, list_products

router = APIRouter(prefix="/api/v1/products")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database engine and the Redis client for the app's lifetime."""
    settings = get_settings()
    if settings.redis_url is None:
        raise RuntimeError("the baseline apps need STOREFRONT_REDIS_URL (the benchmark's Redis)")
    engine = create_engine(settings)
    redis = create_redis(settings.redis_url)
    app.state.sessions = create_session_factory(engine)
    app.state.redis = redis
    app.state.cache_ttl = settings.product_cache_ttl_seconds
    app.state.settings = settings
    # As Storefront's lifespan does; the benchmark says per variant whether it applies.
    tune_garbage_collector(settings.gc_freeze, settings.gc_young_threshold)
    try:
        yield
    finally:
        await redis.aclose()
        await engine.dispose()


@router.get("", response_model=Page[ProductOut])
async def read_products(
    request: Request,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Page[ProductOut]:
    """The uncached read: a count and a page of products, as Storefront's list route."""
    async with request.app.state.sessions() as session:
        rows, total = await list_products(session, (page - 1) * size, size)
    return Page[ProductOut](
        items=[ProductOut.model_validate(p) for p in rows], page=page, size=size, total=total
    )


@router.get("/{product_id}")
async def read_product(request: Request, product_id: int) -> Response:
    """The cached read: the body Storefront cached under the same key (HIT after warm-up)."""
    redis = request.app.state.redis
    key = cache_key(product_id)
    body = await redis.get(key)
    if body is not None:
        return Response(body, media_type="application/json", headers={"X-Cache": "HIT"})
    async with request.app.state.sessions() as session:
        product = await session.get(Product, product_id)
    if product is None:
        return JSONResponse({"error": {"code": "RESOURCE_NOT_FOUND"}}, status_code=404)
    body = ProductOut.model_validate(product).model_dump_json().encode()
    await redis.set(key, body, ex=request.app.state.cache_ttl)
    return Response(body, media_type="application/json", headers={"X-Cache": "MISS"})
