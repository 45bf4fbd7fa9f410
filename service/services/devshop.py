"""What ``storefront dev`` sets up in its database: an administrator and a sample catalogue."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.database import create_engine, create_session_factory
from service.core.passwords import PasswordHashing
from service.core.settings import Settings
from service.models import Product
from service.schemas.product import ProductCreate
from service.services import users

DEV_ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD_FILE = "admin-password"

AdminState = Literal["configured", "created", "existing", "reset", "password_unknown"]


@dataclass(frozen=True)
class DevAdmin:
    """The administrator a dev shop has, and what can be told about its password."""

    email: str
    state: AdminState
    # Only a generated administrator's password is known here, to show to whoever ran `dev`.
    password: str | None = None
    password_file: Path | None = None


SAMPLE_PRODUCTS: tuple[ProductCreate, ...] = (
    ProductCreate(
        name="Stoneware Coffee Mug, 350 ml", sku="SAMPLE-MUG-350", price=Decimal("14.50"), stock=120
    ),
    ProductCreate(
        name="Organic Cotton T-Shirt, Navy, M",
        sku="SAMPLE-TEE-NAVY-M",
        price=Decimal("24.00"),
        stock=80,
    ),
    ProductCreate(
        name="Waxed Canvas Tote Bag", sku="SAMPLE-TOTE-WAX", price=Decimal("39.90"), stock=40
    ),
    ProductCreate(
        name="A5 Dotted Notebook, 120 pages", sku="SAMPLE-NOTE-A5", price=Decimal("9.75"), stock=200
    ),
    ProductCreate(
        name="Insulated Steel Water Bottle, 750 ml",
        sku="SAMPLE-BOTTLE-750",
        price=Decimal("29.00"),
        stock=60,
    ),
    ProductCreate(
        name="Mechanical Keyboard, 75% Layout",
        sku="SAMPLE-KB-75",
        price=Decimal("119.00"),
        stock=15,
    ),
)


@dataclass(frozen=True)
class SeedResult:
    """SKUs of the sample products added now and of those already in the catalogue."""

    added: tuple[str, ...]
    present: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Decisions (pure).
# ---------------------------------------------------------------------------------------------


def generated_admin_state(*, exists: bool, stored_password_works: bool, reset: bool) -> AdminState:
    """What to do about the generated administrator, from what the database and the data
    directory hold. An account whose password is not on file is left alone unless a reset is
    asked for: it may be someone's own account with that e-mail."""
    if not exists:
        return "created"
    if reset:
        return "reset"
    return "existing" if stored_password_works else "password_unknown"


def missing_samples(
    samples: tuple[ProductCreate, ...], present_skus: set[str]
) -> tuple[ProductCreate, ...]:
    """The samples whose SKU the catalogue lacks: a product with a sample's SKU is never
    touched, so stock sold or prices edited survive a second seed."""
    return tuple(sample for sample in samples if sample.sku not in present_skus)


def usable_password(text: str | None) -> str | None:
    """A stored password, if it still meets the sign-up rules (the file may have been edited)."""
    if text is None:
        return None
    password = text.strip()
    if not 8 <= len(password) <= 256 or "\x00" in password:
        return None
    return password


def new_password() -> str:
    # URL-safe, so it goes into a form field or a shell command unquoted.
    return secrets.token_urlsafe(12)


# ---------------------------------------------------------------------------------------------
# Acts: the password file and the database.
# ---------------------------------------------------------------------------------------------


def admin_password_file(data_dir: Path) -> Path:
    return data_dir / ADMIN_PASSWORD_FILE


def read_admin_password(path: Path) -> str | None:
    try:
        return usable_password(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def write_admin_password(path: Path, password: str) -> None:
    """Keep the password readable by its owner only (the data directory's SQLite file already
    lets that owner do anything to the shop, so the file adds no exposure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an older file may have had wider permissions
        handle.write(password + "\n")


async def ensure_dev_admin(
    session: AsyncSession, settings: Settings, passwords: PasswordHashing, *, reset: bool = False
) -> DevAdmin | None:
    """In the dev environment, make sure the shop has an administrator: the configured one, or
    else ``admin@example.com`` with a generated password kept under the data directory.
    Outside dev nothing is generated (None), and the API ensures a configured admin itself."""
    if settings.environment != "dev":
        return None
    if settings.admin_email is not None and settings.admin_password is not None:
        admin = await users.ensure_admin(
            session,
            passwords,
            str(settings.admin_email),
            settings.admin_password.get_secret_value(),
        )
        return DevAdmin(admin.email, "configured")

    path = admin_password_file(settings.data_dir)
    stored = read_admin_password(path)
    user = await users.find_by_email(session, DEV_ADMIN_EMAIL)
    works = (
        user is not None
        and stored is not None
        and await passwords.verify(user.password_hash, stored)
    )
    state = generated_admin_state(exists=user is not None, stored_password_works=works, reset=reset)
    if state == "password_unknown":
        return DevAdmin(DEV_ADMIN_EMAIL, state, password_file=path)
    if state == "existing":
        assert stored is not None
        await users.ensure_admin(session, passwords, DEV_ADMIN_EMAIL, stored)
        return DevAdmin(DEV_ADMIN_EMAIL, state, stored, path)

    # A password already on file is kept for a new account (the database was deleted, the
    # data directory kept), so whatever its owner saved still works.
    password = stored if state == "created" and stored else new_password()
    # Written before the account: a failure in between leaves a file, never a lost password.
    write_admin_password(path, password)
    if user is None:
        await users.ensure_admin(session, passwords, DEV_ADMIN_EMAIL, password)
    else:
        await users.set_admin_password(session, passwords, user, password)
    return DevAdmin(DEV_ADMIN_EMAIL, state, password, path)


async def seed_products(
    session: AsyncSession, samples: tuple[ProductCreate, ...] = SAMPLE_PRODUCTS
) -> SeedResult:
    """Add the sample products the catalogue lacks, keyed on SKU."""
    try:
        return await _add_missing(session, samples)
    except IntegrityError:
        # Someone added one of these SKUs between the read and the commit: read again.
        await session.rollback()
        return await _add_missing(session, samples)


async def _add_missing(session: AsyncSession, samples: tuple[ProductCreate, ...]) -> SeedResult:
    skus = [sample.sku for sample in samples]
    present = set(await session.scalars(select(Product.sku).where(Product.sku.in_(skus))))
    missing = missing_samples(samples, present)
    session.add_all(Product(**sample.model_dump()) for sample in missing)
    await session.commit()
    added = tuple(sample.sku for sample in missing)
    return SeedResult(added, tuple(sku for sku in skus if sku not in added))


async def prepare(
    settings: Settings, *, seed: bool, reset_admin: bool
) -> tuple[DevAdmin | None, SeedResult | None]:
    """Ensure the dev administrator and, with ``seed``, the sample catalogue."""
    engine = create_engine(settings)
    passwords = PasswordHashing(
        settings.password_hash_concurrency, settings.password_hash_wait_seconds
    )
    try:
        async with create_session_factory(engine)() as session:
            admin = await ensure_dev_admin(session, settings, passwords, reset=reset_admin)
            seeded = await seed_products(session) if seed else None
    finally:
        passwords.close()
        await engine.dispose()
    return admin, seeded
