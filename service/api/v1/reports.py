"""Reports: the orders CSV, streamed row by row from the database."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.api.deps import AdminUser, ResourcesDep
from service.core.resources import Resources
from service.schemas.order import DateRange
from service.services import orders

router = APIRouter(prefix="/reports", tags=["reports"])


@router.get(
    "/orders.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, one row per order"}},
)
async def orders_csv(
    window: Annotated[DateRange, Query()], _: AdminUser, resources: ResourcesDep
) -> StreamingResponse:
    """Orders created in [start_date, end_date), never holding the whole set in memory."""
    filename = f"orders-{window.start_date}-{window.end_date}.csv"
    return StreamingResponse(
        _csv_rows(resources, window),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _csv_rows(resources: Resources, window: DateRange) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(orders.REPORT_COLUMNS)
    # The stream outlives the request's dependencies, so it owns its session.
    async with resources.sessions() as session:
        async for row in orders.stream_order_rows(session, window.start_date, window.end_date):
            writer.writerow(_csv_value(value) for value in row)
            if buffer.tell() >= 16_384:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _csv_value(value: object) -> object:
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[attr-defined]
    return getattr(value, "value", value)
