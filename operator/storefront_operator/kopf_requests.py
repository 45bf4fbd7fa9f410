"""Kopf's own API requests in the operator's metrics: its watches, listings, progress patches,
Events and peering keep-alives all pass through one function, wrapped here once.

Kopf offers no hook for this: the wrapper replaces `kopf._cogs.clients.api.request`, which every
other Kopf API call looks up at call time. `install()` fails loudly if a Kopf upgrade moves it,
and the operator's tests check that the counts move, so the metrics cannot go quietly blind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kopf._cogs.clients import api as kopf_api

from storefront_operator import metrics

_original: Callable[..., Any] | None = None
_watched: set[str] = set()
HTTP_VERBS = {"get": "get", "post": "create", "patch": "patch", "put": "update", "delete": "delete"}


def describe(method: str, url: str) -> tuple[str, str | None]:
    """(Kubernetes verb, watched path or None) of a Kopf request: GET with watch=true is a
    watch, a GET of a collection a list."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    verb = HTTP_VERBS.get(method.lower(), method.lower())
    if verb == "get" and query.get("watch") == ["true"]:
        return "watch", parts.path
    return verb, None


def resource_of(path: str) -> str:
    """The plural a watch path ends with (`/apis/apps/v1/namespaces/x/deployments` →
    `deployments`)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


async def _counted(method: str, url: str, **kwargs: Any) -> Any:
    assert _original is not None
    verb, watched = describe(method, url)
    if watched is not None:
        # The first watch of a path is the start; every later one re-opens it.
        restarts = metrics.WATCH_RESTARTS.labels(resource=resource_of(watched))
        if watched in _watched:
            restarts.inc()
        # The series exists from the first watch, at 0: a dashboard's increase() shows 0, not
        # "no data", until a watch is re-opened.
        _watched.add(watched)
    try:
        response = await _original(method, url, **kwargs)
    except Exception as exc:
        metrics.count_api_request("kopf", verb, int(getattr(exc, "status", 0) or 0))
        raise
    metrics.count_api_request("kopf", verb, int(getattr(response, "status", 200)))
    return response


def install() -> None:
    """Wrap Kopf's request function (idempotent)."""
    global _original
    if _original is not None:
        return
    current = getattr(kopf_api, "request", None)
    if current is None or not callable(current):
        raise RuntimeError("kopf._cogs.clients.api.request is gone: update kopf_requests.py")
    _original = current
    kopf_api.request = _counted
