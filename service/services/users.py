"""Accounts: registration, authentication and the start-up admin."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.errors import ConflictError
from service.core.passwords import PasswordHashing
from service.core.security import hash_password
from service.models import Order, OrderStatus, Product, Role, User
from service.schemas.user import AdminDashboard, UserCreate

# Verifying against a fixed hash when the e-mail is unknown keeps login time the same either
# way, so response timing does not reveal which e-mails have accounts. It takes a hashing slot
# like any login, so waiting for one (or a 503 when none frees up) reveals nothing either.
# Computed once, at import, before the event loop serves anything.
_DUMMY_HASH = hash_password("storefront-timing-equaliser")


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession, passwords: PasswordHashing, data: UserCreate, role: Role = Role.USER
) -> User:
    user = User(
        email=normalize_email(str(data.email)),
        name=data.name,
        password_hash=await passwords.hash(data.password),
        role=role,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ConflictError("A user with this e-mail already exists") from None
    return user


async def authenticate(
    session: AsyncSession, passwords: PasswordHashing, email: str, password: str
) -> User | None:
    user = await find_by_email(session, email)
    # The check below can wait seconds for a hashing slot: end the read first, so the session's
    # connection goes back to the pool and a burst of logins cannot hold every connection.
    await session.commit()
    if user is None:
        await passwords.verify(_DUMMY_HASH, password)
        return None
    return user if await passwords.verify(user.password_hash, password) else None


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == normalize_email(email)))


async def ensure_admin(
    session: AsyncSession, passwords: PasswordHashing, email: str, password: str
) -> User:
    """Make sure the configured admin exists with admin role (its password is not reset)."""
    existing = await find_by_email(session, email)
    if existing is not None:
        if existing.role != Role.ADMIN:
            existing.role = Role.ADMIN
            await session.commit()
        return existing
    data = UserCreate(email=email, name="Administrator", password=password)
    try:
        return await create_user(session, passwords, data, role=Role.ADMIN)
    except ConflictError:  # another replica created it at the same moment
        admin = await find_by_email(session, email)
        assert admin is not None
        return admin


async def set_admin_password(
    session: AsyncSession, passwords: PasswordHashing, user: User, password: str
) -> None:
    """Give ``user`` a new password and the admin role."""
    user.password_hash = await passwords.hash(password)
    user.role = Role.ADMIN
    await session.commit()


async def dashboard(session: AsyncSession) -> AdminDashboard:
    users = await session.scalar(select(func.count()).select_from(User)) or 0
    products = await session.scalar(select(func.count()).select_from(Product)) or 0
    orders = await session.scalar(select(func.count()).select_from(Order)) or 0
    revenue = await session.scalar(
        select(func.coalesce(func.sum(Order.total), 0)).where(Order.status != OrderStatus.CANCELLED)
    )
    return AdminDashboard(
        users=users, products=products, orders=orders, revenue=round(float(revenue or 0), 2)
    )
