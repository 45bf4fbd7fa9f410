"""The dev shop: `storefront dev` ensures an administrator (configured, or generated and kept
owner-only under the data dir), only in the dev environment, and seeds sample products once."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from service.core.database import create_engine, create_session_factory
from service.core.passwords import PasswordHashing
from service.core.settings import Settings
from service.migrations import upgrade_async
from service.models import Product, Role, User
from service.services import devshop, users
from service.services.devshop import DEV_ADMIN_EMAIL, SAMPLE_PRODUCTS
from tests.components.process import clean_environment

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256!"


@pytest.fixture
def shop(database_url: str, tmp_path: Path) -> Any:
    """A migrated, empty database, and settings for it in a given environment."""

    async def make(environment: str = "dev", **overrides: Any) -> Settings:
        values: dict[str, Any] = {"admin_email": None, "admin_password": None, **overrides}
        settings = Settings(
            environment=environment,  # type: ignore[arg-type]
            data_dir=tmp_path / "data",
            database_url=database_url,
            jwt_secret=JWT_SECRET,
            **values,
        )
        await upgrade_async(settings)
        return settings

    return make


async def _scalar(settings: Settings, query: Any) -> Any:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            return await session.scalar(query)
    finally:
        await engine.dispose()


async def _logs_in(settings: Settings, email: str, password: str) -> bool:
    engine = create_engine(settings)
    passwords = PasswordHashing(concurrency=1, wait_seconds=5)
    try:
        async with create_session_factory(engine)() as session:
            user = await users.authenticate(session, passwords, email, password)
            return user is not None and user.role == Role.ADMIN
    finally:
        passwords.close()
        await engine.dispose()


async def test_dev_generates_an_admin_and_keeps_its_password_owner_only(shop: Any) -> None:
    settings = await shop("dev")
    admin, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert admin is not None and admin.state == "created"
    assert admin.email == DEV_ADMIN_EMAIL and admin.password
    kept = settings.data_dir / "admin-password"
    assert admin.password_file == kept
    assert kept.read_text().strip() == admin.password
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert await _logs_in(settings, DEV_ADMIN_EMAIL, admin.password)


async def test_a_restart_keeps_the_one_generated_admin_and_shows_its_password(shop: Any) -> None:
    settings = await shop("dev")
    first, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    again, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert first is not None and again is not None
    assert (again.state, again.password) == ("existing", first.password)
    assert await _scalar(settings, select(func.count()).select_from(User)) == 1


async def test_a_password_not_on_file_is_reset_only_when_asked(shop: Any) -> None:
    settings = await shop("dev")
    first, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert first is not None and first.password
    (settings.data_dir / "admin-password").unlink()

    unknown, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert unknown is not None and (unknown.state, unknown.password) == ("password_unknown", None)
    assert await _logs_in(settings, DEV_ADMIN_EMAIL, first.password)  # untouched

    reset, _ = await devshop.prepare(settings, seed=False, reset_admin=True)
    assert reset is not None and reset.state == "reset" and reset.password
    assert reset.password != first.password
    assert (settings.data_dir / "admin-password").read_text().strip() == reset.password
    assert await _logs_in(settings, DEV_ADMIN_EMAIL, reset.password)
    assert not await _logs_in(settings, DEV_ADMIN_EMAIL, first.password)


async def test_a_kept_password_is_reused_when_the_database_is_new(shop: Any) -> None:
    settings = await shop("dev")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "admin-password").write_text("saved-before-123\n")
    admin, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert admin is not None and (admin.state, admin.password) == ("created", "saved-before-123")
    assert await _logs_in(settings, DEV_ADMIN_EMAIL, "saved-before-123")


async def test_dev_ensures_the_configured_admin_and_generates_none(shop: Any) -> None:
    settings = await shop("dev", admin_email="owner@example.com", admin_password="owner-password-1")
    admin, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert admin is not None
    assert (admin.email, admin.state, admin.password) == ("owner@example.com", "configured", None)
    assert await _logs_in(settings, "owner@example.com", "owner-password-1")
    assert await _scalar(settings, select(User).where(User.email == DEV_ADMIN_EMAIL)) is None
    assert not (settings.data_dir / "admin-password").exists()


@pytest.mark.parametrize("environment", ["test", "production"])
async def test_no_admin_is_generated_outside_dev(shop: Any, environment: str) -> None:
    settings = await shop(environment)
    admin, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert admin is None
    assert await _scalar(settings, select(func.count()).select_from(User)) == 0
    assert not (settings.data_dir / "admin-password").exists()


@pytest.mark.parametrize("environment", ["test", "production"])
async def test_outside_dev_the_configured_admin_is_left_to_the_api(
    shop: Any, environment: str
) -> None:
    settings = await shop(
        environment, admin_email="owner@example.com", admin_password="owner-password-1"
    )
    admin, _ = await devshop.prepare(settings, seed=False, reset_admin=False)
    assert admin is None
    assert await _scalar(settings, select(func.count()).select_from(User)) == 0


async def test_seeding_twice_adds_each_sample_once_and_leaves_sold_stock_alone(
    shop: Any,
) -> None:
    settings = await shop("dev")
    _, first = await devshop.prepare(settings, seed=True, reset_admin=False)
    assert first is not None
    assert first.added == tuple(p.sku for p in SAMPLE_PRODUCTS) and first.present == ()

    mug = SAMPLE_PRODUCTS[0].sku
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            await session.execute(update(Product).where(Product.sku == mug).values(stock=3))
            await session.commit()
    finally:
        await engine.dispose()

    _, again = await devshop.prepare(settings, seed=True, reset_admin=False)
    assert again is not None
    assert again.added == () and again.present == tuple(p.sku for p in SAMPLE_PRODUCTS)
    count = await _scalar(settings, select(func.count()).select_from(Product))
    assert count == len(SAMPLE_PRODUCTS)
    assert await _scalar(settings, select(Product.stock).where(Product.sku == mug)) == 3


async def test_seeding_adds_only_the_samples_whose_sku_is_missing(shop: Any) -> None:
    settings = await shop("dev")
    taken = SAMPLE_PRODUCTS[1]
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            session.add(Product(name="My own shirt", sku=taken.sku, price=1, stock=1))
            await session.commit()
    finally:
        await engine.dispose()
    _, seeded = await devshop.prepare(settings, seed=True, reset_admin=False)
    assert seeded is not None and seeded.present == (taken.sku,)
    assert len(seeded.added) == len(SAMPLE_PRODUCTS) - 1
    name = await _scalar(settings, select(Product.name).where(Product.sku == taken.sku))
    assert name == "My own shirt"


@pytest.mark.parametrize(
    ("exists", "works", "reset", "state"),
    [
        (False, False, False, "created"),
        (False, False, True, "created"),
        (True, True, False, "existing"),
        (True, False, False, "password_unknown"),
        (True, True, True, "reset"),
        (True, False, True, "reset"),
    ],
)
def test_what_happens_to_the_generated_admin(
    exists: bool, works: bool, reset: bool, state: str
) -> None:
    decided = devshop.generated_admin_state(exists=exists, stored_password_works=works, reset=reset)
    assert decided == state


@pytest.mark.parametrize("text", [None, "", "short", "   \n", "x" * 257, "bad\x00password"])
def test_an_unusable_stored_password_counts_as_none(text: str | None) -> None:
    assert devshop.usable_password(text) is None


def test_sample_products_have_unique_skus_and_stock() -> None:
    skus = [p.sku for p in SAMPLE_PRODUCTS]
    assert len(set(skus)) == len(skus) >= 5
    assert all(p.stock > 0 and p.price > 0 for p in SAMPLE_PRODUCTS)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--seed"], {"STOREFRONT_ENVIRONMENT": "production"}, "does not run in production"),
        (
            ["--reset-admin"],
            {"STOREFRONT_ADMIN_EMAIL": "o@example.com", "STOREFRONT_ADMIN_PASSWORD": "12345678"},
            "--reset-admin applies to the generated administrator",
        ),
    ],
)
def test_dev_flags_that_do_not_apply_end_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    environment = clean_environment() | {
        "STOREFRONT_DATA_DIR": str(tmp_path / "data"),
        "STOREFRONT_JWT_SECRET": JWT_SECRET,
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "dev", "--port", "0", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
