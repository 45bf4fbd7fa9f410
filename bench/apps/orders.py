"""The order the bare baseline places: Storefront's order transaction (the same token check, the
same SQL, the same stock reservation, the same pricing), with no outbox, event or telemetry."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select, update

from service.core.security import decode_access_token
from service.models import Order, OrderItem, OrderStatus, Product, User
from service.schemas.order import OrderCreate, OrderOut
from service.services import pricing

router = APIRouter(prefix="/api/v1/orders")


def _error(status_code: int, code: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code}}, status_code=status_code)


@router.post("", status_code=201)
async def create_order(
    request: Request,
    data: OrderCreate,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Reserve stock and record the order in one transaction, as ``services.orders`` does up to
    its commit; nothing after it."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "UNAUTHORIZED")
    async with request.app.state.sessions() as session:
        # As Storefront's current-user dependency: the token, then the user, in the session
        # the order is written with.
        user_id = decode_access_token(token, request.app.state.settings)
        user = await session.get(User, user_id) if user_id is not None else None
        if user is None:
            return _error(401, "UNAUTHORIZED")
        wanted = Counter[int]()
        for line in data.items:
            wanted[line.product_id] += line.qty
        product_ids = sorted(wanted)
        known = set(await session.scalars(select(Product.id).where(Product.id.in_(product_ids))))
        if any(pid not in known for pid in product_ids):
            return _error(404, "RESOURCE_NOT_FOUND")
        unit_prices: dict[int, Decimal] = {}
        for product_id in product_ids:
            qty = wanted[product_id]
            price = await session.scalar(
                update(Product)
                .where(Product.id == product_id, Product.stock >= qty)
                .values(stock=Product.stock - qty)
                .returning(Product.price)
            )
            if price is None:
                await session.rollback()
                return _error(409, "CONFLICT")
            unit_prices[product_id] = price
        lines = [(unit_prices[pid], wanted[pid]) for pid in product_ids]
        order = Order(
            user_id=user.id,
            status=OrderStatus.PENDING,
            discount_pct=data.discount_pct,
            total=pricing.discounted_total(pricing.subtotal(lines), data.discount_pct),
            items=[
                OrderItem(product_id=pid, qty=wanted[pid], unit_price=unit_prices[pid])
                for pid in product_ids
            ],
        )
        session.add(order)
        await session.commit()
    body = OrderOut.model_validate(order).model_dump_json()
    return Response(body, status_code=201, media_type="application/json")
