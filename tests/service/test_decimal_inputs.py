"""Amounts and percentages: the input form the OpenAPI document states is the one validation
accepts, so a client built from the document is never refused for the form of a number."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from service.schemas.common import MAX_AMOUNT, Money
from service.schemas.order import OrderCreate
from service.schemas.product import ProductCreate

MONEY = TypeAdapter(Money)
ITEMS = [{"product_id": 1, "qty": 1}]


def _branches(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    number, string = schema["anyOf"]
    assert number["type"] == "number" and string["type"] == "string"
    return number, string


MONEY_NUMBER, MONEY_STRING = _branches(MONEY.json_schema())
DISCOUNT_NUMBER, DISCOUNT_STRING = _branches(
    OrderCreate.model_json_schema()["properties"]["discount_pct"]
)


def _discount(value: Any) -> Decimal:
    return OrderCreate.model_validate({"items": ITEMS, "discount_pct": value}).discount_pct


def test_the_api_documents_prices_in_this_form() -> None:
    assert ProductCreate.model_json_schema()["properties"]["price"]["anyOf"][1] == MONEY_STRING
    assert MONEY_NUMBER["maximum"] == float(MAX_AMOUNT)


@given(st.from_regex(MONEY_STRING["pattern"], fullmatch=True))
def test_every_documented_amount_string_is_accepted_exactly(text: str) -> None:
    assert MONEY.validate_python(text) == Decimal(text)


@given(st.integers(min_value=0, max_value=int(MAX_AMOUNT * 100)))
def test_every_documented_amount_number_is_accepted(cents: int) -> None:
    assert MONEY.validate_python(cents / 100) == Decimal(cents) / 100


@pytest.mark.parametrize("text", ["", "abc", "10.555", "10000000000", "-1", "NaN"])
def test_amounts_outside_the_documented_form_are_refused(text: str) -> None:
    assert not re.fullmatch(MONEY_STRING["pattern"], text)
    with pytest.raises(ValidationError):
        MONEY.validate_python(text)


@given(st.from_regex(DISCOUNT_STRING["pattern"], fullmatch=True))
def test_every_documented_discount_string_is_accepted_exactly(text: str) -> None:
    assert _discount(text) == Decimal(text)


@pytest.mark.parametrize("text", ["100.01", "101", "0.125", "-5", ""])
def test_discounts_outside_the_documented_form_are_refused(text: str) -> None:
    assert not re.fullmatch(DISCOUNT_STRING["pattern"], text)
    with pytest.raises(ValidationError):
        _discount(text)


def test_discount_numbers_are_documented_up_to_one_hundred() -> None:
    assert (DISCOUNT_NUMBER["minimum"], DISCOUNT_NUMBER["maximum"]) == (0, 100)
    assert _discount(100) == 100
    with pytest.raises(ValidationError):
        _discount(100.5)
