"""Pricing rules, without any server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from service.services import pricing


def test_line_total_rounds_half_up_to_cents() -> None:
    assert pricing.line_total(Decimal("0.125"), 1) == Decimal("0.13")
    assert pricing.line_total(Decimal("9.99"), 3) == Decimal("29.97")


def test_discount_is_rounded_then_subtracted() -> None:
    assert pricing.discounted_total(Decimal("59.97"), Decimal("10")) == Decimal("53.97")
    assert pricing.discounted_total(Decimal("10.00"), Decimal("100")) == Decimal("0.00")
    assert pricing.discounted_total(Decimal("10.00"), Decimal("0")) == Decimal("10.00")


def test_subtotal_sums_line_totals() -> None:
    assert pricing.subtotal([(Decimal("1.005"), 1), (Decimal("2.50"), 2)]) == Decimal("6.01")


@pytest.mark.parametrize("pct", [Decimal("-1"), Decimal("100.01")])
def test_discount_out_of_range_is_refused(pct: Decimal) -> None:
    with pytest.raises(ValueError, match="discount_pct"):
        pricing.discounted_total(Decimal("1"), pct)
