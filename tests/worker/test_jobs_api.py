"""Jobs through the API with a real worker: an order's confirmation mail reaches a real SMTP
server, a sales report is queued, followed by poll and SSE, and downloaded as CSV."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from service.core.settings import Settings
from tests.components.ports import free_port
from tests.service.conftest import asgi_client, login, running_app
from tests.worker.conftest import JWT_SECRET, base_env, start_storefront

pytestmark = pytest.mark.redis

ADMIN = ("admin@example.com", "admin-password-123")


class Inbox(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[object] = []

    def handle_message(self, message: object) -> None:
        self.messages.append(message)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def sse_events(body: str) -> list[dict[str, object]]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def test_order_mail_and_report_job_through_a_real_worker(
    redis_url: str, tmp_path: Path, smtp: tuple[Controller, Inbox]
) -> None:
    controller, inbox = smtp
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}"
    smtp_url = f"smtp://127.0.0.1:{controller.port}"
    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        admin_email=ADMIN[0],
        admin_password=ADMIN[1],
        smtp_url=smtp_url,
        log_format="json",
    )
    async with running_app(settings) as app, asgi_client(app) as client:
        env = base_env(
            redis_url, tmp_path, STOREFRONT_DATABASE_URL=database_url, STOREFRONT_SMTP_URL=smtp_url
        )
        worker = start_storefront("worker", tmp_path / "worker.log", env, ready="worker_started")
        try:
            admin = await login(client, *ADMIN)
            product = await client.post(
                "/api/v1/products",
                json={"name": "Lamp", "price": 12.5, "sku": "LAMP-1", "stock": 5},
                headers=admin,
            )
            assert product.status_code == 201, product.text
            created = await client.post(
                "/api/v1/users",
                json={
                    "email": "ann@example.com",
                    "name": "Ann",
                    "password": "correct-horse-battery",
                },
            )
            assert created.status_code == 201, created.text
            ann = await login(client, "ann@example.com", "correct-horse-battery")
            order = await client.post(
                "/api/v1/orders",
                json={"items": [{"product_id": product.json()["id"], "qty": 2}]},
                headers={**ann, "X-Request-ID": "order-req-1"},
            )
            assert order.status_code == 201, order.text

            accepted = await client.post(
                "/api/v1/reports",
                json={"start_date": "2000-01-01", "end_date": "2100-01-01"},
                headers=admin,
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]
            assert accepted.json() == {"job_id": job_id, "status": "queued"}

            # The SSE stream ends once the job has finished.
            stream = await client.get(f"/api/v1/jobs/{job_id}/events", headers=admin, timeout=60)
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream.text)
            assert events[-1]["status"] == "succeeded" and events[-1]["progress"] == 100

            status = await client.get(f"/api/v1/jobs/{job_id}", headers=admin)
            assert status.status_code == 200
            body = status.json()
            assert body["status"] == "succeeded" and body["error"] is None
            assert body["result"]["rows"] == 1

            csv_response = await client.get(f"/api/v1/reports/{job_id}.csv", headers=admin)
            assert csv_response.status_code == 200
            lines = csv_response.text.strip().splitlines()
            assert lines[0].startswith("order_id,created_at") and len(lines) == 2
            assert lines[1].startswith(f"{order.json()['id']},")
        finally:
            worker.stop()

        # The welcome mail (a background task of sign-up) and exactly one confirmation (queued).
        confirmations = [m for m in inbox.messages if "order" in m["Subject"]]  # type: ignore[index]
        assert len(confirmations) == 1
        assert confirmations[0]["To"] == "ann@example.com"  # type: ignore[index]
        assert f"#{order.json()['id']}" in confirmations[0]["Subject"]  # type: ignore[index]
        worker_log = (tmp_path / "worker.log").read_text()
        assert '"request_id":"order-req-1"' in worker_log


async def test_job_errors_use_the_project_format(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}",
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        admin_email=ADMIN[0],
        admin_password=ADMIN[1],
        log_format="json",
    )
    async with running_app(settings) as app, asgi_client(app) as client:
        admin = await login(client, *ADMIN)
        missing = await client.get("/api/v1/jobs/no-such-job", headers=admin)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
        assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
        events = await client.get("/api/v1/jobs/no-such-job/events", headers=admin)
        assert events.status_code == 404
        report = await client.get("/api/v1/reports/no-such-job.csv", headers=admin)
        assert report.status_code == 404
        backwards = await client.post(
            "/api/v1/reports",
            json={"start_date": "2026-02-01", "end_date": "2026-01-01"},
            headers=admin,
        )
        assert backwards.status_code == 422
        assert backwards.json()["error"]["code"] == "VALIDATION_ERROR"
        anonymous = await client.post(
            "/api/v1/reports", json={"start_date": "2026-01-01", "end_date": "2026-02-01"}
        )
        assert anonymous.status_code == 401
        assert isinstance(client, httpx.AsyncClient)
