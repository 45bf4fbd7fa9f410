"""Interpreter tuning for a long-running server process: how the cyclic garbage collector runs.

Under load CPython's collector is a large hidden cost. With many requests in flight, each
request's objects outlive a few young-generation collections, get promoted, and trigger full
collections that walk the whole heap: the app, its libraries, SQLAlchemy's and OpenTelemetry's
caches, about 150,000 objects here and 60-80 ms a pass. Measured with wrk on the cached product
read, that was a quarter of the process's CPU time (``bench/``).

Two standard remedies, applied once start-up is done:

- ``gc.freeze()`` moves everything alive then (modules, routes, pools, settings) to a permanent
  generation that later collections do not walk; it lives as long as the process anyway.
- A higher young-generation threshold lets short-lived request objects die by reference
  counting before a collection promotes them. Cyclic garbage still gets collected, only in
  larger, rarer batches.
"""

from __future__ import annotations

import gc


def tune_garbage_collector(freeze_startup_heap: bool, young_threshold: int) -> None:
    """Freeze what start-up built and set the young generation's threshold (0: keep Python's).

    Call once, when start-up has built every long-lived object."""
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)
    if freeze_startup_heap:
        # Start-up garbage goes first, so only what lives on is frozen.
        gc.collect()
        gc.freeze()
