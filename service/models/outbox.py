"""Jobs owed to the queue, written in the same transaction as the data they are about."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, TimestampMixin


class OutboxMessage(TimestampMixin, Base):
    """One job to enqueue: deleted once Redis has the message (see services/outbox.py)."""

    __tablename__ = "job_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The job's ID, fixed when it is owed: a client can follow the job before it is queued.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    actor: Mapped[str] = mapped_column(String(64))
    # Whether the job's status is kept for followers (jobs whose ID a client is given).
    track: Mapped[bool] = mapped_column(default=False)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    # request_id and traceparent of the request that owed the job, so a late delivery still
    # joins its trace and its log lines.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
