"""Orders of the current user."""

from __future__ import annotations

from fastapi import APIRouter, status

from service.api import idempotency
from service.api.deps import CurrentUser, PaginationDep, RedisDep, SessionDep
from service.api.idempotency import IdempotencyDep
from service.schemas.common import Page, ResourceId
from service.schemas.order import OrderCreate, OrderOut, OrderPlaced
from service.services import orders

router = APIRouter(prefix="/orders", tags=["orders"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=idempotency.responses(status.HTTP_201_CREATED),
)
async def create_order(
    data: OrderCreate,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    idempotent: IdempotencyDep,
) -> OrderPlaced:
    """Reserve stock atomically and price the order; announces ``order.created`` and queues
    its confirmation mail, whose job ID comes back as ``confirmation_job_id``. Safe to retry
    with an ``Idempotency-Key``."""
    placed = await orders.create_order(
        session, redis, user.id, data, before_commit=idempotent.records(_placed)
    )
    return _placed(placed)


def _placed(placed: orders.PlacedOrder) -> OrderPlaced:
    order = OrderOut.model_validate(placed.order)
    return OrderPlaced(**dict(order), confirmation_job_id=placed.confirmation_job_id)


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    page: PaginationDep, user: CurrentUser, session: SessionDep
) -> Page[OrderOut]:
    rows, total = await orders.list_own_orders(session, user.id, page.offset, page.size)
    return Page[OrderOut](
        items=[OrderOut.model_validate(o) for o in rows],
        page=page.page,
        size=page.size,
        total=total,
    )


@router.get("/{order_id}")
async def read_order(order_id: ResourceId, user: CurrentUser, session: SessionDep) -> OrderOut:
    return OrderOut.model_validate(await orders.get_own_order(session, user.id, order_id))
