"""Live domain events as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import ResourcesDep

router = APIRouter(prefix="/events", tags=["events"])

Topic = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


@router.get("/{topic}", response_class=EventSourceResponse)
async def stream_events(topic: Topic, resources: ResourcesDep) -> AsyncIterator[ServerSentEvent]:
    """Every event published on ``topic`` from now on, from any API replica."""
    async with resources.events.subscribe(topic) as events:
        yield ServerSentEvent(comment="subscribed")
        async for event in events:
            yield ServerSentEvent(data=event, event=str(event.get("type", "message")))
