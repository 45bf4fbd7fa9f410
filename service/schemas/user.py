"""Users and access tokens."""

from __future__ import annotations

from pydantic import EmailStr, Field

from service.models.user import Role
from service.schemas.common import Name, SafeStr, Schema


class UserCreate(Schema):
    email: EmailStr = Field(max_length=320)
    name: Name
    password: SafeStr = Field(min_length=8, max_length=256)


class UserOut(Schema):
    id: int
    email: str
    name: str
    role: Role


class Token(Schema):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class AdminDashboard(Schema):
    users: int
    products: int
    orders: int
    revenue: float
