"""Orders: totals are computed fields, timestamps serialized as ISO 8601 UTC."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, computed_field, field_serializer, model_validator

from service.models.order import OrderStatus
from service.schemas.common import Money, ResourceId, Schema, decimal_input_schema
from service.services import pricing


class OrderItemIn(Schema):
    product_id: ResourceId
    qty: int = Field(ge=1, le=10_000)


class OrderCreate(Schema):
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)
    discount_pct: Annotated[
        Decimal,
        Field(ge=0, le=100, max_digits=5, decimal_places=2),
        decimal_input_schema(Decimal(100), r"^(100(\.0{1,2})?|\d{1,2}(\.\d{1,2})?)$"),
    ] = Decimal("0")


class OrderItemOut(Schema):
    product_id: int
    qty: int
    price: Money = Field(validation_alias="unit_price")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def line_total(self) -> Money:
        return pricing.line_total(self.price, self.qty)


class OrderOut(Schema):
    id: int
    status: OrderStatus
    discount_pct: float
    items: list[OrderItemOut]
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def subtotal(self) -> Money:
        return pricing.subtotal((item.price, item.qty) for item in self.items)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> Money:
        return pricing.discounted_total(self.subtotal, Decimal(str(self.discount_pct)))

    @field_serializer("created_at")
    def _serialize_created_at(self, value: datetime) -> str:
        return value.isoformat().replace("+00:00", "Z")


class OrderPlaced(OrderOut):
    """A new order, with the job that sends its confirmation."""

    confirmation_job_id: str = Field(
        description="The confirmation mail's job, at /api/v1/jobs/{id} (admins)"
    )


class DateRange(Schema):
    """A half-open reporting window [start_date, end_date)."""

    start_date: date
    end_date: date

    @model_validator(mode="after")
    def _end_after_start(self) -> DateRange:
        if self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        return self
