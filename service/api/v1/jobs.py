"""Background jobs: their status by poll, and as Server-Sent Events until they finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import AdminUser, RedisDep, ResourcesDep
from service.core.errors import NotFoundError
from service.schemas.job import JobStatus
from service.services import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$", description="The job's ID")]
# Re-read the stored status this often while no event arrives (a keep-alive, and a safety net
# for an event published between subscribing and the first read).
RESYNC_SECONDS = 15.0


async def _status_or_404(redis: Any, job_id: str) -> JobStatus:
    status = await jobs.get_job(redis, job_id)
    if status is None:
        raise NotFoundError(f"Job {job_id} not found")
    return status


async def existing_job(job_id: JobId, _: AdminUser, redis: RedisDep) -> JobStatus:
    """The job's stored status; an unknown or expired job is a 404 before any streaming."""
    return await _status_or_404(redis, job_id)


ExistingJob = Annotated[JobStatus, Depends(existing_job)]


@router.get("/{job_id}")
async def read_job(job: ExistingJob) -> JobStatus:
    """The job's status, progress (0..100), result once it succeeded, error once it failed."""
    return job


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: JobId, _: ExistingJob, resources: ResourcesDep
) -> AsyncIterator[ServerSentEvent]:
    """The job's status now and at every change, ending after it succeeds or fails."""
    # Subscribe before reading the status again, so no change falls between the two.
    async with resources.events.subscribe(jobs.job_topic(job_id)) as updates:
        current = await _status_or_404(resources.redis, job_id)
        yield ServerSentEvent(data=current.model_dump(mode="json"), event="status")
        pending: asyncio.Task[Any] | None = None
        try:
            while not jobs.is_terminal(current):
                if pending is None:
                    pending = asyncio.ensure_future(anext(updates))
                done, _pending = await asyncio.wait({pending}, timeout=RESYNC_SECONDS)
                if done:
                    try:
                        event = pending.result()
                    except StopAsyncIteration:  # the API is shutting down
                        return
                    pending = None
                    update = JobStatus.model_validate(event)
                else:
                    update = await _status_or_404(resources.redis, job_id)
                if update != current:
                    current = update
                    yield ServerSentEvent(data=current.model_dump(mode="json"), event="status")
                elif not done:
                    yield ServerSentEvent(comment="keep-alive")
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
