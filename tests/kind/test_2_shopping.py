"""Shopping through a port-forward: a shopper signs up, logs in and orders what an administrator
put on sale; a live-events client hears `order.created`; the order's confirmation job succeeds in
a worker pod; the request's ID finds its log lines in the API and worker pods and its trace in
the cluster's Jaeger (`storefront trace`)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.components.kube import wait_for
from tests.components.process import clean_environment
from tests.kind.conftest import Shop, login

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]


@dataclass
class Listener:
    """An SSE client of /api/v1/events/orders, in a thread."""

    url: str
    subscribed: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> None:
        with (
            httpx.Client(base_url=self.url, timeout=httpx.Timeout(10, read=90)) as http,
            http.stream("GET", "/api/v1/events/orders") as stream,
        ):
            event = ""
            for line in stream.iter_lines():
                if line.startswith(": subscribed"):
                    self.subscribed.set()
                elif line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    self.events.append({"event": event, **json.loads(line[5:])})
                    if event == "order.created":
                        return


@dataclass(frozen=True)
class PlacedOrder:
    request_id: str
    order: dict[str, Any]
    listener: Listener


@pytest.fixture(scope="module")
def placed(shop: Shop) -> Iterator[PlacedOrder]:
    """An administrator adds a product; a new shopper orders two, while a client listens."""
    with shop.api() as api_url:
        yield from _place_order(shop, api_url)


def _place_order(shop: Shop, api_url: str) -> Iterator[PlacedOrder]:
    listener = Listener(api_url)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    with httpx.Client(base_url=api_url, timeout=30) as api:
        product = api.post(
            "/api/v1/products",
            json={
                "name": "Kind mug",
                "price": 12.5,
                "sku": f"KIND-{uuid.uuid4().hex[:8]}",
                "stock": 10,
            },
            headers=shop.admin_headers(api),
        )
        assert product.status_code == 201, product.text
        email = f"shopper-{uuid.uuid4().hex[:8]}@example.com"
        signup = api.post(
            "/api/v1/users", json={"email": email, "name": "Kim", "password": "kind-e2e-password"}
        )
        assert signup.status_code == 201, signup.text
        shopper = login(api, email, "kind-e2e-password")
        assert listener.subscribed.wait(30), "the events stream never subscribed"
        request_id = str(uuid.uuid4())
        order = api.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product.json()["id"], "qty": 2}]},
            headers={**shopper, "X-Request-ID": request_id},
        )
        assert order.status_code == 201, order.text
        assert order.headers["X-Request-ID"] == request_id
    yield PlacedOrder(request_id, order.json(), listener)
    thread.join(timeout=1)


def test_the_order_is_priced_and_stored(placed: PlacedOrder) -> None:
    assert placed.order["total"] == 25.0 and placed.order["status"] == "pending"


def test_a_live_events_client_hears_order_created(placed: PlacedOrder) -> None:
    events = wait_for(
        lambda: [e for e in placed.listener.events if e["event"] == "order.created"],
        timeout=60,
        what="order.created on the events stream",
    )
    assert events[0]["order_id"] == placed.order["id"]


def _json_lines(logs: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(pod, record) for each JSON log line of `kubectl logs --prefix`."""
    for line in logs.splitlines():
        prefix, _, text = line.partition(" ")
        if text.startswith("{"):
            yield prefix, json.loads(text)


def test_the_confirmation_job_succeeds_in_a_worker_pod(
    shop: Shop, placed: PlacedOrder, api_url: str
) -> None:
    job_id = placed.order["confirmation_job_id"]
    with httpx.Client(base_url=api_url, timeout=30) as api:
        admin = shop.admin_headers(api)

        def status() -> str:
            job = api.get(f"/api/v1/jobs/{job_id}", headers=admin)
            assert job.status_code == 200, job.text
            return "" if job.json()["status"] in ("queued", "running") else job.json()["status"]

        assert wait_for(status, timeout=120, interval=2, what="the job finished") == "succeeded"
    selector = f"app.kubernetes.io/instance={shop.name},app.kubernetes.io/component=worker"
    ((pod, record),) = [
        (pod, record)
        for pod, record in _json_lines(shop.cluster.logs(shop.namespace, selector))
        if record.get("event") == "job_finished" and record.get("message_id") == job_id
    ]
    assert f"pod/{shop.name}-worker-" in pod, pod
    assert record["outcome"] == "succeeded" and record["request_id"] == placed.request_id


def test_the_request_id_finds_its_log_lines_in_api_and_worker_pods(
    shop: Shop, placed: PlacedOrder
) -> None:
    def components_logging() -> set[str]:
        found = set()
        for component in ("api", "worker"):
            selector = (
                f"app.kubernetes.io/instance={shop.name},app.kubernetes.io/component={component}"
            )
            logs = shop.cluster.logs(shop.namespace, selector)
            if any(r.get("request_id") == placed.request_id for _, r in _json_lines(logs)):
                found.add(component)
        return found if found == {"api", "worker"} else set()

    assert wait_for(components_logging, timeout=120, interval=3, what="log lines by request ID")


def test_storefront_trace_shows_the_request_across_api_and_worker(
    placed: PlacedOrder, jaeger_url: str
) -> None:
    def trace() -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "trace",
                placed.request_id,
                "--backend-url",
                jaeger_url,
            ],
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        spans = result.stdout
        return (
            spans if "POST /api/v1/orders" in spans and "send_order_confirmation" in spans else ""
        )

    assert wait_for(trace, timeout=120, interval=3, what="the order's trace in Jaeger")
