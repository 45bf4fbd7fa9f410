"""``generate_sales_report``: the orders of a date range as CSV, stored in ``reports`` under the
job's ID, with progress as rows are written."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from service.models import Order, Report
from service.schemas.order import DateRange
from service.services import orders
from worker.runtime import current_job_id, report_progress, resources

PROGRESS_EVERY_ROWS = 500


def csv_cell(value: object) -> object:
    """How a database value is written in the CSV (ISO dates, enum values)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return getattr(value, "value", value)


def default_window(today: date) -> DateRange:
    """The scheduled nightly report covers yesterday."""
    return DateRange(start_date=today - timedelta(days=1), end_date=today)


async def generate_sales_report(
    start_date: str | None = None, end_date: str | None = None
) -> dict[str, Any]:
    if start_date is None or end_date is None:
        window = default_window(datetime.now(UTC).date())
    else:
        window = DateRange(
            start_date=date.fromisoformat(start_date), end_date=date.fromisoformat(end_date)
        )
    job_id = current_job_id()
    assert job_id is not None, "reports are stored under their job ID"
    res = await resources()
    async with res.sessions() as session:
        existing = await session.get(Report, job_id)
        if existing is not None:  # a redelivered message: the report is already there
            return {"report_id": job_id, "rows": existing.rows}
        lower, upper = orders.day_bounds(window.start_date, window.end_date)
        total = (
            await session.scalar(
                select(func.count())
                .select_from(Order)
                .where(Order.created_at >= lower, Order.created_at < upper)
            )
            or 0
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(orders.REPORT_COLUMNS)
    rows = 0
    async with res.sessions() as session:
        async for row in orders.stream_order_rows(session, window.start_date, window.end_date):
            writer.writerow(csv_cell(value) for value in row)
            rows += 1
            if rows % PROGRESS_EVERY_ROWS == 0 and total:
                await report_progress(min(95, rows * 95 // total))
    async with res.sessions() as session:
        session.add(
            Report(
                id=job_id,
                start_date=window.start_date,
                end_date=window.end_date,
                rows=rows,
                csv=buffer.getvalue(),
            )
        )
        await session.commit()
    return {
        "report_id": job_id,
        "rows": rows,
        "start_date": window.start_date.isoformat(),
        "end_date": window.end_date.isoformat(),
        "csv_url": f"/api/v1/reports/{job_id}.csv",
    }
