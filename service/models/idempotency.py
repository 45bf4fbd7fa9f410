"""Idempotency keys: the answer to a keyed POST, kept so that its retries get it back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, utcnow


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of one user (see services/idempotency.py).

    In flight while ``response_status`` is NULL: a request holds it, identified by
    ``lock_token``. Completed once the response is stored, in the same transaction as the write
    that the response reports.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # The claim: a second request with the same key fails to insert its own row.
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
        CheckConstraint(
            "(response_status IS NULL) = (response_body IS NULL)", name="response_whole"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of method, path and canonical body: the same key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Changed when a retry takes over an abandoned claim, so the old holder can no longer
    # complete the key.
    lock_token: Mapped[str] = mapped_column(String(32))
    locked_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    response_status: Mapped[int | None] = mapped_column(default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
