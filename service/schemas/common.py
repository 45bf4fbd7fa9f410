"""Types shared by every schema: safe strings, bounded IDs, money, pages and the error shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

T = TypeVar("T")

# Database integer columns are 32-bit on PostgreSQL: bound IDs so an oversized one is a 422/404,
# never a driver overflow.
MAX_ID = 2_147_483_647


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[SafeStr, Field(min_length=1, max_length=200)]
ResourceId = Annotated[int, Field(ge=1, le=MAX_ID)]
Money = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, str_strip_whitespace=True)


class Page(Schema, Generic[T]):
    items: list[T]
    page: int
    size: int
    total: int


class ErrorDetail(BaseModel):
    code: str = Field(examples=["RESOURCE_NOT_FOUND"])
    message: str
    request_id: str | None
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
