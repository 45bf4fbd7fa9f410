"""Products under cursor (keyset) pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import SessionDep
from service.schemas.product import ProductCursorPage, ProductOut
from service.services import products

router = APIRouter(prefix="/products", tags=["products v2"])


@router.get("")
async def list_products(
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ProductCursorPage:
    """A page of products after ``cursor``; follow ``next_cursor`` until it is null."""
    rows, next_cursor = await products.list_products_after(session, cursor, limit)
    return ProductCursorPage(
        items=[ProductOut.model_validate(p) for p in rows], next_cursor=next_cursor
    )
