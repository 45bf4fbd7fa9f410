"""Products, their images and cursor pages."""

from __future__ import annotations

from pydantic import Field

from service.schemas.common import Money, Name, SafeStr, Schema


class ProductCreate(Schema):
    name: Name
    price: Money
    sku: SafeStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    stock: int = Field(default=0, ge=0, le=1_000_000_000)


class ProductUpdate(Schema):
    name: Name | None = None
    price: Money | None = None
    stock: int | None = Field(default=None, ge=0, le=1_000_000_000)


class ProductOut(Schema):
    id: int
    name: str
    sku: str
    price: Money
    stock: int


class ProductImageOut(Schema):
    width: int
    height: int
    bytes: int
    content_type: str
    job_id: str | None = Field(default=None, description="The thumbnail job, at /api/v1/jobs/{id}")


class ProductCursorPage(Schema):
    items: list[ProductOut]
    next_cursor: str | None
