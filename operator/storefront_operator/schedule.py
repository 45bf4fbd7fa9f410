"""When each instance is reconciled or re-checked: pure timing, no clock and no I/O of its own.

Events are debounced per instance (a burst of changes to one instance's children is one
reconcile), failed reconciles retried with a capped exponential backoff, and the safety-net
resync spreads instances over its interval by a stable phase plus jitter, so that a pass is a
trickle of small batches rather than a burst.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class DueSet(Generic[K]):
    """Keys waiting for work, each with the time it is due.

    A key's first event makes it due `debounce` seconds later; each further event before then
    moves it to `debounce` after that event, but never later than `max_delay` after the first,
    so a child that keeps changing cannot starve its instance.
    """

    debounce: float
    max_delay: float
    _due: dict[K, float] = field(default_factory=dict)
    _first: dict[K, float] = field(default_factory=dict)

    def touch(self, key: K, now: float) -> float:
        """An event for `key`: schedule (or postpone) it with the debounce; returns its due."""
        first = self._first.setdefault(key, now)
        due = min(now + self.debounce, first + self.max_delay)
        self._due[key] = due
        return due

    def at(self, key: K, due: float) -> float:
        """Schedule `key` no later than `due` (an earlier due stays); returns its due."""
        current = self._due.get(key)
        if current is None or due < current:
            self._due[key] = due
            self._first.setdefault(key, due)
        return self._due[key]

    def pop_due(self, now: float, limit: int | None = None) -> list[K]:
        """Keys due by `now`, earliest first (at most `limit`), removed from the set."""
        ready = sorted((due, i, k) for i, (k, due) in enumerate(self._due.items()) if due <= now)
        keys = [k for _, _, k in ready[:limit]]
        for k in keys:
            self.discard(k)
        return keys

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    def discard(self, key: K) -> None:
        self._due.pop(key, None)
        self._first.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)


def phase(uid: str) -> float:
    """A stable fraction in [0, 1) for an instance: where its resync falls in the interval."""
    return int(hashlib.sha256(uid.encode()).hexdigest()[:12], 16) / float(1 << 48)


def first_resync(now: float, interval: float, uid: str) -> float:
    """An instance's first resync: its phase of the interval from now, so the instances an
    operator starts with are spread over the interval instead of all due together."""
    return now + interval * max(phase(uid), 0.01)


def next_resync(now: float, interval: float, jitter: float, draw: float) -> float:
    """The resync after one at `now`: `interval` give or take `jitter` of it (`draw`, uniform in
    [0, 1), picks where), so instances that happened to align drift apart again."""
    return now + interval * (1 + jitter * (2 * draw - 1))


def resync_batch(due: Mapping[K, float], now: float, window: float, limit: int) -> list[K]:
    """The instances a resync pass checks together: due by `now` + `window`, earliest first, at
    most `limit` (one list request per kind covers them all)."""
    ready = sorted((when, i, k) for i, (k, when) in enumerate(due.items()) if when <= now + window)
    return [k for _, _, k in ready[:limit]]


def resync_window(interval: float) -> float:
    """How far ahead a pass gathers instances: a twentieth of the interval, at most 30 s, so
    1,000 instances over 10 minutes are checked about 50 at a time."""
    return min(interval / 20, 30.0)


def retry_delay(attempt: int, base: float = 2.0, cap: float = 30.0) -> float:
    """Seconds before retry number `attempt` (1, 2, ...) of a reconcile that failed."""
    return min(cap, base * 2 ** max(0, attempt - 1))


# Problems that something other than a spec change can fix (a Secret created, a policy lifted):
# re-checked with the backoff. The others wait for the spec to change.
RETRIED_PROBLEMS = frozenset({"SecretNotFound", "ApplyFailed"})


def retry_after(phase_: str, reason: str | None, attempt: int) -> float | None:
    """When to reconcile again an instance whose last reconcile ended with `phase_` for
    `reason` (the Degraded condition's), or None to wait for an event."""
    if phase_ == "Error" or (phase_ == "Degraded" and reason in RETRIED_PROBLEMS):
        return retry_delay(attempt)
    return None


def batches(items: Iterable[K], size: int) -> list[list[K]]:
    """`items` in lists of at most `size`."""
    out: list[list[K]] = []
    for item in items:
        if not out or len(out[-1]) >= size:
            out.append([])
        out[-1].append(item)
    return out
