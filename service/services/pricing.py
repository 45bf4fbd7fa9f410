"""Pure pricing rules: line totals, subtotal, discount and total, rounded half-up to cents."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


def line_total(unit_price: Decimal, qty: int) -> Decimal:
    return to_cents(unit_price * qty)


def subtotal(lines: Iterable[tuple[Decimal, int]]) -> Decimal:
    return to_cents(sum((line_total(price, qty) for price, qty in lines), Decimal("0")))


def discounted_total(amount: Decimal, discount_pct: Decimal) -> Decimal:
    """``amount`` less ``discount_pct`` percent; the discount is rounded, never the total up."""
    if not Decimal("0") <= discount_pct <= Decimal("100"):
        raise ValueError("discount_pct must be between 0 and 100")
    return to_cents(amount) - to_cents(amount * discount_pct / 100)
