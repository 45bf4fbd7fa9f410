"""``process_product_image``: thumbnails of a product's stored image, one row per size."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import structlog
from PIL import Image, UnidentifiedImageError
from sqlalchemy import select

from service.models import ProductImage
from worker.errors import PermanentJobError
from worker.runtime import report_progress, resources

log = structlog.get_logger("storefront.worker.images")

# What Pillow raises for stored bytes it cannot decode: a retry would read the same bytes.
UNREADABLE_IMAGE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
)


def variant_name(size: int) -> str:
    return f"thumb-{size}"


def make_thumbnails(
    data: bytes, sizes: list[int], max_pixels: int
) -> list[tuple[str, bytes, int, int, str]]:
    """(variant, bytes, width, height, content type) for each size (CPU work: run in a thread).

    Each thumbnail fits in a ``size`` x ``size`` box, keeps the aspect ratio and is never
    larger than the original.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    out = []
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "P")
        fmt, content_type = ("PNG", "image/png") if has_alpha else ("JPEG", "image/jpeg")
        base = image.convert("RGBA" if has_alpha else "RGB")
    for size in sizes:
        thumb = base.copy()
        thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        thumb.save(buffer, format=fmt, optimize=True)
        out.append((variant_name(size), buffer.getvalue(), thumb.width, thumb.height, content_type))
    return out


async def process_product_image(product_id: int) -> dict[str, Any]:
    res = await resources()
    async with res.sessions() as session:
        original = await session.get(ProductImage, (product_id, "original"))
        if original is None:
            raise PermanentJobError(f"product {product_id} has no stored image")
        data = original.data
    await report_progress(10)
    try:
        thumbnails = await asyncio.to_thread(
            make_thumbnails,
            data,
            res.worker_settings.thumbnail_sizes,
            res.settings.max_image_pixels,
        )
    except UNREADABLE_IMAGE_ERRORS as exc:
        raise PermanentJobError(
            f"the stored image of product {product_id} is unreadable ({exc.__class__.__name__})"
        ) from exc
    await report_progress(80)
    async with res.sessions() as session:
        current = await session.get(ProductImage, (product_id, "original"))
        if current is None or current.data != data:
            # Replaced (or deleted) while we worked: the job queued by that change writes the
            # thumbnails of the new image, and ours must not overwrite them if it commits later.
            log.info("image_superseded", product_id=product_id)
            return {"product_id": product_id, "variants": [], "superseded": True}
        existing = {
            row.variant: row
            for row in await session.scalars(
                select(ProductImage).where(ProductImage.product_id == product_id)
            )
        }
        # An upsert per variant: running twice leaves the same rows.
        for variant, payload, width, height, content_type in thumbnails:
            row = existing.get(variant)
            if row is None:
                row = ProductImage(product_id=product_id, variant=variant)
                session.add(row)
            row.content_type, row.width, row.height, row.data = content_type, width, height, payload
        await session.commit()
    return {
        "product_id": product_id,
        "variants": [{"variant": v, "width": w, "height": h} for v, _, w, h, _ in thumbnails],
    }
