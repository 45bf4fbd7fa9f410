"""The product catalogue, its Redis read-through cache and image storage."""

from __future__ import annotations

import asyncio
import base64
import io

import orjson
import redis.asyncio as aioredis
import structlog
from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.database import BeforeCommit
from service.core.errors import ConflictError, NotFoundError, ValidationFailedError
from service.models import OutboxMessage, Product, ProductImage
from service.observability import metrics
from service.schemas.product import ProductCreate, ProductImageOut, ProductOut, ProductUpdate
from service.services import outbox

log = structlog.get_logger("storefront.products")


def cache_key(product_id: int) -> str:
    return f"storefront:cache:product:{product_id}"


async def create_product(
    session: AsyncSession,
    data: ProductCreate,
    *,
    before_commit: BeforeCommit[Product] | None = None,
) -> Product:
    product = Product(**data.model_dump())
    session.add(product)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(f"A product with sku {data.sku!r} already exists") from None
    if before_commit is not None:
        await before_commit(session, product)
    await session.commit()
    return product


async def get_product(session: AsyncSession, product_id: int) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFoundError(f"Product {product_id} not found")
    return product


async def get_product_cached(
    sessions: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis,
    product_id: int,
    ttl_seconds: int,
) -> tuple[bytes, bool]:
    """The product's JSON and whether it came from the cache.

    A hit never opens a database session. The cache is an optimisation: when Redis is down the
    database answers and the outage is logged, rather than failing reads.
    """
    key = cache_key(product_id)
    try:
        cached = await redis.get(key)
    except aioredis.RedisError as exc:
        log.warning("cache_unavailable", error=str(exc))
        cached = None
    if isinstance(cached, bytes):
        metrics.PRODUCT_CACHE_HITS.inc()
        return cached, True
    metrics.PRODUCT_CACHE_MISSES.inc()
    async with sessions() as session:
        product = await get_product(session, product_id)
        body = ProductOut.model_validate(product).model_dump_json().encode()
    try:
        await redis.set(key, body, ex=ttl_seconds)
    except aioredis.RedisError as exc:
        log.warning("cache_unavailable", error=str(exc))
    return body, False


async def update_product(
    session: AsyncSession, redis: aioredis.Redis, product_id: int, data: ProductUpdate
) -> Product:
    product = await get_product(session, product_id)
    for field, value in data.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(product, field, value)
    await session.commit()
    await invalidate(redis, product_id)
    return product


async def invalidate(redis: aioredis.Redis, product_id: int) -> None:
    # Deleting after the commit means a concurrent reader can at worst re-cache the new row.
    try:
        await redis.delete(cache_key(product_id))
    except aioredis.RedisError as exc:
        log.error("cache_invalidation_failed", product_id=product_id, error=str(exc))
        raise


async def list_products(
    session: AsyncSession, offset: int, limit: int
) -> tuple[list[Product], int]:
    total = await session.scalar(select(func.count()).select_from(Product)) or 0
    rows = await session.scalars(select(Product).order_by(Product.id).offset(offset).limit(limit))
    return list(rows), total


async def list_products_after(
    session: AsyncSession, cursor: str | None, limit: int
) -> tuple[list[Product], str | None]:
    """Keyset pagination: stable under inserts and O(limit) however deep the page."""
    after_id = decode_cursor(cursor) if cursor else 0
    rows = list(
        await session.scalars(
            select(Product).where(Product.id > after_id).order_by(Product.id).limit(limit + 1)
        )
    )
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        raise ValidationFailedError("cursor: malformed cursor") from None
    if not isinstance(value, int) or not 0 <= value <= 2_147_483_647:
        raise ValidationFailedError("cursor: malformed cursor")
    return value


def resize_image(data: bytes, max_size: int, max_pixels: int) -> tuple[bytes, int, int, str]:
    """Decode, bound and re-encode an upload (CPU work: call it in a thread)."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image.thumbnail((max_size, max_size))
            has_alpha = image.mode in ("RGBA", "LA", "P")
            fmt, content_type = ("PNG", "image/png") if has_alpha else ("JPEG", "image/jpeg")
            converted = image.convert("RGBA" if has_alpha else "RGB")
            out = io.BytesIO()
            converted.save(out, format=fmt, optimize=True)
            return out.getvalue(), converted.width, converted.height, content_type
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValidationFailedError(
            f"file: not a readable image ({exc.__class__.__name__})"
        ) from None


async def store_image(
    session: AsyncSession,
    product_id: int,
    upload: bytes,
    max_size: int,
    max_pixels: int,
    *,
    before_commit: BeforeCommit[ProductImageOut] | None = None,
) -> tuple[ProductImageOut, OutboxMessage]:
    """Resize and store the original; the thumbnails job is owed in the same transaction, and
    its ID is the answer's ``job_id``."""
    await get_product(session, product_id)
    data, width, height, content_type = await asyncio.to_thread(
        resize_image, upload, max_size, max_pixels
    )
    image = await session.get(ProductImage, (product_id, "original"))
    if image is None:
        image = ProductImage(product_id=product_id, variant="original")
        session.add(image)
    image.content_type, image.width, image.height, image.data = content_type, width, height, data
    thumbnails = outbox.owe(
        session, "process_product_image", {"product_id": product_id}, track=True
    )
    stored = ProductImageOut(
        width=width,
        height=height,
        bytes=len(data),
        content_type=content_type,
        job_id=thumbnails.message_id,
    )
    if before_commit is not None:
        await before_commit(session, stored)
    await session.commit()
    return stored, thumbnails
