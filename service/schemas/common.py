"""Types shared by every schema: safe strings, bounded IDs, money, pages and the error shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

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
MAX_AMOUNT = Decimal("9999999999.99")


def decimal_input_schema(maximum: Decimal, string_pattern: str) -> WithJsonSchema:
    """What a client may send for an exact decimal with two places, documented as validated: a
    JSON number, or a decimal string (exact, so the better choice for money).

    Pydantic documents a Decimal input as "a number or any string"; the string's form and the
    two places are stated here so generated clients and API tests see the real rule.
    """
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": float(maximum)},
                {"type": "string", "pattern": string_pattern},
            ],
            "description": f"At most two decimal places, from 0 to {maximum}.",
        },
        mode="validation",
    )


Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_AMOUNT, max_digits=12, decimal_places=2),
    decimal_input_schema(MAX_AMOUNT, r"^\d{1,10}(\.\d{1,2})?$"),
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
