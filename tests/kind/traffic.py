"""Client traffic from inside the cluster, through the API's Service as any other pod would reach
it (a port-forward pins one pod, so it cannot show what a rollout or an autoscaler does).

Runs in a Job from the Storefront image, which brings Python and httpx; the tests mount this file
from a ConfigMap. Two modes:

  load      GET one product as fast as CONCURRENCY threads can, for SECONDS or until /tmp/stop
            exists (CPU for the HPA)
  shop      until /tmp/stop exists: read a product, and every fifth time place an order (with an
            Idempotency-Key); count every request and every failure (a non-2xx status, or no
            answer twice in a row)

Both print one JSON summary line at the end: {"requests": N, "failures": N, "retried": N,
"errors": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from pathlib import Path

import httpx

STOP_FILE = Path("/tmp/stop")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.retried = 0
        self.errors: list[str] = []

    def record(self, what: str, response: httpx.Response | None, error: str = "") -> None:
        with self.lock:
            self.requests += 1
            if response is not None and response.is_success:
                return
            self.failures += 1
            detail = f"{response.status_code} {response.text[:200]}" if response else error
            if len(self.errors) < 20:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {what}: {detail}")

    def summary(self) -> str:
        with self.lock:
            return json.dumps(
                {
                    "requests": self.requests,
                    "failures": self.failures,
                    "retried": self.retried,
                    "errors": self.errors,
                }
            )


def call(
    tally: Tally, client: httpx.Client, what: str, method: str, path: str, **kwargs: object
) -> None:
    """One request as a careful client makes it: when the connection closes before any answer
    (a kept-alive connection the server closed as it shut down, which HTTP/1.1 allows), send
    it once more on a new connection. Safe for an order too: it carries an Idempotency-Key, so
    a retry of one that was placed gets the same order back. A second failure counts."""
    for attempt in (1, 2):
        try:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            if attempt == 1 and isinstance(exc, RETRIED):
                with tally.lock:
                    tally.retried += 1
                continue
            tally.record(what, None, f"{type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            tally.record(what, None, f"{type(exc).__name__}: {exc}")
        else:
            tally.record(what, response)
        return


# No answer at all: the request may or may not have reached the application.
RETRIED = (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError, httpx.WriteError)


def load(url: str, product: int, seconds: float, concurrency: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while time.monotonic() < deadline and not STOP_FILE.exists():
                call(tally, client, "read", "GET", f"/api/v1/products/{product}")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def shop(url: str, product: int, token: str) -> Tally:
    tally = Tally()
    order = {"items": [{"product_id": product, "qty": 1}]}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=10) as client:
        count = 0
        while not STOP_FILE.exists():
            call(tally, client, "read", "GET", f"/api/v1/products/{product}")
            if count % 5 == 0:
                key = {"Idempotency-Key": str(uuid.uuid4())}
                call(tally, client, "order", "POST", "/api/v1/orders", json=order,
                     headers=headers | key)  # fmt: skip
            count += 1
            if count % 50 == 0:
                print(f"progress {tally.summary()}", flush=True)
            time.sleep(0.02)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["load", "shop"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--product", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.mode == "load":
        tally = load(args.url, args.product, args.seconds, args.concurrency)
    else:
        tally = shop(args.url, args.product, os.environ["SHOPPER_TOKEN"])
    print(f"summary {tally.summary()}", flush=True)


if __name__ == "__main__":
    main()
