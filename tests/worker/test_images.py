"""Product thumbnails: the pure resizer, and an uploaded image turned into thumbnail rows by a
real ``storefront worker`` on SQLite and PostgreSQL, the same rows however often the job runs."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from PIL import Image, ImageDraw, UnidentifiedImageError
from sqlalchemy import select

from service.core.database import create_engine, create_session_factory
from service.core.redis import create_redis
from service.core.settings import Settings
from service.migrations import upgrade
from service.models import Product, ProductImage
from service.services import jobs
from tests.service.conftest import asgi_client, login, running_app
from tests.worker.conftest import JWT_SECRET, base_env, start_storefront, wait_for_async
from worker import metrics
from worker.actors.images import make_thumbnails

ADMIN = ("admin@example.com", "admin-password-123")
SIZES = [128, 256, 512]
MAX_PIXELS = 40_000_000


def picture(width: int, height: int, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """An image with some detail (so encoders have work to do) in ``fmt``."""
    image = Image.new(mode, (width, height), (40, 90, 160, 255)[: len(mode)])
    draw = ImageDraw.Draw(image)
    for i in range(0, max(width, height), 25):
        draw.line([(i, 0), (0, i)], fill=(250, 200, 30, 128)[: len(mode)], width=3)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    """The decoded image (its ``format`` says how it was encoded)."""
    image = Image.open(io.BytesIO(data))
    image.load()  # reads the whole in-memory file: nothing is left open
    return image


def test_thumbnails_fit_each_box_and_keep_the_aspect_ratio() -> None:
    thumbs = make_thumbnails(picture(1000, 500), SIZES, MAX_PIXELS)
    assert [(v, w, h, ct) for v, _, w, h, ct in thumbs] == [
        ("thumb-128", 128, 64, "image/jpeg"),
        ("thumb-256", 256, 128, "image/jpeg"),
        ("thumb-512", 512, 256, "image/jpeg"),
    ]
    for _, data, width, height, _ in thumbs:
        image = decoded(data)
        assert image.format == "JPEG" and image.size == (width, height)


def test_a_portrait_with_an_awkward_ratio_keeps_its_proportions_to_the_pixel() -> None:
    width, height = 300, 937
    for _, data, w, h, _ in make_thumbnails(picture(width, height), SIZES, MAX_PIXELS):
        assert h in SIZES  # the long side fills the box
        assert abs(w - h * width / height) <= 1  # the short side is the rounded proportion
        assert decoded(data).size == (w, h)


def test_a_small_image_is_never_enlarged() -> None:
    thumbs = make_thumbnails(picture(100, 60), SIZES, MAX_PIXELS)
    assert [(w, h) for _, _, w, h, _ in thumbs] == [(100, 60)] * 3


def test_transparency_is_kept_as_png() -> None:
    thumbs = make_thumbnails(picture(400, 400, mode="RGBA"), [128], MAX_PIXELS)
    [(variant, data, width, height, content_type)] = thumbs
    assert (variant, width, height, content_type) == ("thumb-128", 128, 128, "image/png")
    image = decoded(data)
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.getextrema()[3][0] < 255  # some pixels are still see-through


def test_the_same_image_gives_the_same_bytes() -> None:
    data = picture(640, 480)
    assert make_thumbnails(data, SIZES, MAX_PIXELS) == make_thumbnails(data, SIZES, MAX_PIXELS)


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(UnidentifiedImageError):
        make_thumbnails(b"definitely not a picture", SIZES, MAX_PIXELS)


# ---------------------------------------------------------------------------------------------
# The job against a real database.
# ---------------------------------------------------------------------------------------------

Rows = dict[str, tuple[int, int, str, str]]


async def image_rows(settings: Settings, product_id: int) -> Rows:
    """variant -> (width, height, content type, sha256 of the bytes) as stored."""
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            rows = await session.scalars(
                select(ProductImage).where(ProductImage.product_id == product_id)
            )
            return {
                r.variant: (r.width, r.height, r.content_type, hashlib.sha256(r.data).hexdigest())
                for r in rows
            }
    finally:
        await engine.dispose()


def image_jobs(client: sync_redis.Redis) -> list[str]:
    """IDs of the thumbnail jobs recorded in Redis."""
    return [
        key.decode().removeprefix("storefront:job:")
        for key in client.scan_iter("storefront:job:*")
        if client.hget(key, "actor") == b"process_product_image"
    ]


@pytest.mark.redis
@pytest.mark.slow
async def test_an_uploaded_image_gets_thumbnails_from_a_real_worker_idempotently(
    database_url: str, redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        admin_email=ADMIN[0],
        admin_password=ADMIN[1],
        log_format="json",
    )
    async with running_app(settings) as app, asgi_client(app) as client:
        admin = await login(client, *ADMIN)

        async def succeeded(job_id: str) -> dict[str, Any] | None:
            response = await client.get(f"/api/v1/jobs/{job_id}", headers=admin)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert body["status"] != "failed", body
            return body if body["status"] == "succeeded" else None

        env = base_env(redis_url, tmp_path, STOREFRONT_DATABASE_URL=database_url)
        worker = start_storefront("worker", tmp_path / "worker.log", env, ready="worker_started")
        try:
            product = await client.post(
                "/api/v1/products",
                json={"name": "Lamp", "price": 12.5, "sku": "LAMP-1", "stock": 5},
                headers=admin,
            )
            assert product.status_code == 201, product.text
            product_id = product.json()["id"]
            upload = await client.post(
                f"/api/v1/products/{product_id}/image",
                files={"file": ("lamp.png", picture(1600, 800), "image/png")},
                headers=admin,
            )
            assert upload.status_code == 200, upload.text
            # Stored bounded to 1024 px on its long side, as an opaque JPEG.
            assert upload.json()["width"] == 1024 and upload.json()["height"] == 512

            [job_id] = image_jobs(redis_client)  # the upload queued exactly one thumbnail job
            status = await wait_for_async(lambda: succeeded(job_id), 90, what="thumbnail job")
            expected_variants = [
                {"variant": "thumb-128", "width": 128, "height": 64},
                {"variant": "thumb-256", "width": 256, "height": 128},
                {"variant": "thumb-512", "width": 512, "height": 256},
            ]
            assert status["progress"] == 100
            assert status["result"] == {"product_id": product_id, "variants": expected_variants}

            rows = await image_rows(settings, product_id)
            assert {v: row[:3] for v, row in rows.items()} == {
                "original": (1024, 512, "image/jpeg"),
                "thumb-128": (128, 64, "image/jpeg"),
                "thumb-256": (256, 128, "image/jpeg"),
                "thumb-512": (512, 256, "image/jpeg"),
            }
            engine = create_engine(settings)
            try:
                async with create_session_factory(engine)() as session:
                    for variant in ("thumb-128", "thumb-256", "thumb-512"):
                        row = await session.get(ProductImage, (product_id, variant))
                        assert row is not None
                        assert decoded(row.data).size == (row.width, row.height)
            finally:
                await engine.dispose()

            # The same job once more (a redelivery, a second upload of the same file).
            redis = create_redis(redis_url)
            try:
                again = await jobs.enqueue(
                    redis, "process_product_image", {"product_id": product_id}
                )
            finally:
                await redis.aclose()
            status = await wait_for_async(lambda: succeeded(again), 90, what="second job")
            assert status["result"]["variants"] == expected_variants
            assert await image_rows(settings, product_id) == rows
        finally:
            worker.stop()


def retries() -> float:
    sample = metrics.REGISTRY.get_sample_value(
        "storefront_job_retries_total", {"actor": "process_product_image"}
    )
    return sample or 0.0


@pytest.mark.redis
def test_an_unreadable_stored_image_is_dead_lettered_without_retries(
    settings: Settings,
    stub_worker: tuple[StubBroker, Worker],
    redis_client: sync_redis.Redis,
) -> None:
    broker, worker = stub_worker
    upgrade(settings)

    async def store_garbage() -> int:
        engine = create_engine(settings)
        try:
            async with create_session_factory(engine)() as session:
                product = Product(name="Broken", sku="BROKEN-1", price=1, stock=1)
                session.add(product)
                await session.flush()
                session.add(
                    ProductImage(
                        product_id=product.id,
                        variant="original",
                        content_type="image/jpeg",
                        width=10,
                        height=10,
                        data=b"not a jpeg at all",
                    )
                )
                await session.commit()
                return product.id
        finally:
            await engine.dispose()

    product_id = asyncio.run(store_garbage())
    retries_before = retries()
    message = broker.get_actor("process_product_image").send(product_id)
    broker.join("images", fail_fast=False)
    worker.join()
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    status = jobs.decode_status(
        message.message_id, redis_client.hgetall(jobs.job_key(message.message_id))
    )
    assert status is not None and status.status == "failed"
    assert status.error is not None and "unreadable" in status.error
    assert retries() == retries_before
