"""Background jobs as the API reports them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from service.schemas.common import Schema

JobState = Literal["queued", "running", "succeeded", "failed"]


class JobAccepted(Schema):
    job_id: str
    status: JobState = "queued"


class JobStatus(Schema):
    job_id: str
    status: JobState
    progress: int = Field(ge=0, le=100)
    result: Any = None
    error: str | None = None
