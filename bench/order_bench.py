"""Order-creation benchmark: ``POST /api/v1/orders`` on a real PostgreSQL, Storefront (with and
without an ``Idempotency-Key``) against bare FastAPI placing the same order in the same
transaction, loaded by wrk in short interleaved rounds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bench.components import (
    Pinning,
    RedisInstance,
    Server,
    WrkRequest,
    random_secret,
    run_wrk,
    start_servers,
    start_sink,
)
from bench.report import Row, TargetCheck
from bench.stats import BenchError, Target, VariantSummary, WrkResult, check_clean, summarize
from bench.stats import round_orders as plan_rounds
from tests.components.postgres import PostgresServer, running_postgres

PATH = "/api/v1/orders"
SECTION = "POST /api/v1/orders (PostgreSQL: stock reserved, order and 2 items written)"
PRODUCTS = 100
# Far more than any run orders: a round never runs out of stock, so every answer is a 201.
STOCK = 1_000_000_000
REDIS_DB = 4
USER_EMAIL = "bench-orders@storefront.example.com"
# The shortest measured round: orders take hundreds of milliseconds each under load.
MIN_ROUND_SECONDS = 3


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    server: str  # the server process it is sent to
    app: str
    idempotency_key: bool = False  # a key of its own on every request
    sample_ratio: float | None = None  # Storefront exporting to the sink at this ratio
    tuned_gc: bool = True  # Storefront's garbage-collector settings


VARIANTS = (
    Variant("bare", "bare FastAPI", "bare", "bare", tuned_gc=False),
    Variant("bare-gc", "bare FastAPI, Storefront's GC settings", "bare-gc", "bare"),
    Variant("storefront", "Storefront, sampling 10 %", "storefront", "storefront", False, 0.1),
    Variant(
        "storefront-key",
        "Storefront, sampling 10 %, Idempotency-Key on each",
        "storefront",
        "storefront",
        True,
        0.1,
    ),
)
BASELINES = ("bare", "bare-gc", "storefront")
# Goals: reported as met or missed, never asserted. The key's row reports its cost (its ratio
# to Storefront without a key) and has no goal of its own.
TARGETS: dict[str, tuple[Target, ...]] = {
    "storefront": (Target("bare", 0.8), Target("bare-gc", 0.8)),
}


@dataclass(frozen=True)
class OrderPlan:
    duration_s: int
    warmup_s: int
    rounds: int
    connections: int = 32


@dataclass
class OrderOutcome:
    plan: OrderPlan
    rounds: dict[str, list[WrkResult]] = field(default_factory=dict)
    summaries: dict[str, VariantSummary] = field(default_factory=dict)
    orders_written: int = 0
    exported: dict[str, int] = field(default_factory=dict)


def order_bodies() -> list[str]:
    """The orders sent in turn: two products each (quantities 1 and 2, 10 % off), spread over
    the catalogue so concurrent orders seldom wait on the same rows' locks."""
    half = PRODUCTS // 2
    return [
        orjson.dumps(
            {
                "items": [{"product_id": i, "qty": 1}, {"product_id": i + half, "qty": 2}],
                "discount_pct": "10",
            }
        ).decode()
        for i in range(1, half + 1)
    ]


def wrk_request(variant: Variant, token: str) -> WrkRequest:
    headers = [f"Authorization: Bearer {token}"]
    if variant.idempotency_key:
        # Unique per request: per run (the prefix) and per request on its thread (wrk's {n}).
        headers.append(f"Idempotency-Key: bench-{uuid.uuid4().hex}-{{n}}")
    return WrkRequest("POST", "application/json", "\n".join(order_bodies()), tuple(headers))


async def _prepare(url: str, jwt_secret: str) -> str:
    """Migrate, seed the catalogue and the customer; return the customer's access token."""
    from service.core.database import create_engine, create_session_factory
    from service.core.security import create_access_token
    from service.core.settings import Settings
    from service.migrations import upgrade_async
    from service.models import Product, User

    settings = Settings(environment="production", database_url=url, jwt_secret=jwt_secret)
    await upgrade_async(settings)
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            session.add_all(
                Product(
                    name=f"Product {i}",
                    sku=f"BENCH-{i:04d}",
                    price=Decimal(f"{i}.99"),
                    stock=STOCK,
                )
                for i in range(1, PRODUCTS + 1)
            )
            # Never signs in by password: the token is made directly.
            user = User(email=USER_EMAIL, name="Bench customer", password_hash="!")
            session.add(user)
            await session.commit()
            return create_access_token(user.id, settings).token
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _session(url: str) -> AsyncIterator[AsyncSession]:
    from service.core.database import create_engine, create_session_factory
    from service.core.settings import Settings

    engine = create_engine(Settings(environment="dev", database_url=url))
    try:
        async with create_session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def _stock(url: str, product_ids: list[int]) -> dict[int, int]:
    from service.models import Product

    async with _session(url) as session:
        rows = await session.execute(
            select(Product.id, Product.stock).where(Product.id.in_(product_ids))
        )
        return {int(pid): int(left) for pid, left in rows}


async def _written(url: str, order_id: int) -> dict[str, Any]:
    """What an order left in the database: its row and its items."""
    from service.models import Order, OrderItem

    async with _session(url) as session:
        order = await session.get(Order, order_id)
        if order is None:
            raise BenchError(f"order {order_id} was answered 201 but not stored")
        items = await session.execute(
            select(OrderItem.product_id, OrderItem.qty, OrderItem.unit_price)
            .where(OrderItem.order_id == order_id)
            .order_by(OrderItem.product_id)
        )
        return {
            "order": (order.user_id, str(order.status), str(order.discount_pct), order.total),
            "items": [tuple(row) for row in items],
        }


async def _count_orders(url: str) -> int:
    from service.models import Order

    async with _session(url) as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


def verify_same_rows(servers: dict[str, Server], url: str, token: str) -> None:
    """One order through each variant: the same rows written (order, items, stock taken), the
    same body answered (but for IDs, times and Storefront's confirmation job), and a retry with
    the same key answered from the key without a second order. Fails loudly otherwise."""
    body = order_bodies()[0]
    product_ids = [item["product_id"] for item in orjson.loads(body)["items"]]
    written: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if variant.idempotency_key:
            headers["Idempotency-Key"] = f"bench-check-{uuid.uuid4().hex}"
        before = asyncio.run(_stock(url, product_ids))
        with httpx.Client(base_url=servers[variant.server].url, timeout=30) as client:
            response = client.post(PATH, content=body, headers=headers)
            if response.status_code != 201:
                raise BenchError(f"{variant.key}: order answered {response.status_code}")
            answer = orjson.loads(response.content)
            if variant.idempotency_key:
                before_retry = asyncio.run(_count_orders(url))
                retry = client.post(PATH, content=body, headers=headers)
                if retry.headers.get("idempotent-replayed") != "true" or retry.content != (
                    response.content
                ):
                    raise BenchError(f"{variant.key}: a retry with the same key was not replayed")
                if asyncio.run(_count_orders(url)) != before_retry:
                    raise BenchError(f"{variant.key}: a retry with the same key placed an order")
        rows = asyncio.run(_written(url, int(answer["id"])))
        after = asyncio.run(_stock(url, product_ids))
        rows["stock_taken"] = {pid: before[pid] - after[pid] for pid in product_ids}
        written[variant.key] = rows
        for volatile in ("id", "created_at", "confirmation_job_id"):
            answer.pop(volatile, None)
        answers[variant.key] = answer
    if len({repr(w) for w in written.values()}) != 1:
        raise BenchError(f"the variants write different rows: {written}")
    if len({orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in answers.values()}) != 1:
        raise BenchError(f"the variants answer different orders: {answers}")


def server_env(variant: Variant, base: dict[str, str], sink_url: str) -> dict[str, str]:
    env = dict(base)
    if not variant.tuned_gc:
        env["STOREFRONT_GC_FREEZE"] = "false"
        env["STOREFRONT_GC_YOUNG_THRESHOLD"] = "0"
    if variant.sample_ratio is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink_url
        env["STOREFRONT_TRACE_SAMPLE_RATIO"] = str(variant.sample_ratio)
    return env


def run_orders(
    plan: OrderPlan,
    workdir: Path,
    redis_server: RedisInstance,
    pinning: Pinning,
    progress: Callable[[str], None],
) -> OrderOutcome:
    outcome = OrderOutcome(plan)
    with contextlib.ExitStack() as stack:
        progress("Orders: starting PostgreSQL")
        # On the load generator's CPU, as Redis: the measured server keeps its own.
        postgres: PostgresServer = stack.enter_context(
            running_postgres(workdir / "postgres", pinning.client)
        )
        database = postgres.create_database("bench_orders")
        url = postgres.url_for(database)
        jwt_secret = random_secret()
        progress("Orders: migrating and seeding")
        token = asyncio.run(_prepare(url, jwt_secret))
        sink = start_sink(workdir, pinning)
        stack.callback(sink.process.stop)
        redis_client = redis_server.client(REDIS_DB)
        redis_client.flushdb()
        # The confirmation jobs Storefront queues are left for no worker: dropped at the end.
        stack.callback(redis_client.close)
        stack.callback(redis_client.flushdb)
        base_env = {
            "STOREFRONT_ENVIRONMENT": "production",
            "STOREFRONT_JWT_SECRET": jwt_secret,
            "STOREFRONT_DATABASE_URL": url,
            "STOREFRONT_REDIS_URL": redis_server.url(REDIS_DB),
            "STOREFRONT_DATA_DIR": str(workdir),
            "STOREFRONT_LOG_FORMAT": "json",
            "STOREFRONT_LOG_LEVEL": "INFO",
        }
        progress("Orders: starting the servers")
        processes = {v.server: v for v in VARIANTS}
        started = start_servers(
            [(name, v.app, server_env(v, base_env, sink.url)) for name, v in processes.items()],
            workdir,
            pinning,
            "/api/v1/products/1",
        )
        for server in started:
            stack.callback(server.process.stop)
        servers = {server.name: server for server in started}
        verify_same_rows(servers, url, token)

        requests = {v.key: wrk_request(v, token) for v in VARIANTS}
        for variant in VARIANTS:
            progress(f"Orders: warming up {variant.label}")
            label = f"warm-up {variant.key} {PATH}"
            warmed = run_wrk(
                servers[variant.server].url + PATH,
                plan.warmup_s,
                plan.connections,
                pinning,
                label,
                wrk_request(variant, token),
            )
            # A cold server may finish no order in a short warm-up; a refused one is an error.
            if warmed.non_2xx:
                raise BenchError(f"{label}: {warmed.non_2xx} answers were not 2xx")
        results: dict[str, list[WrkResult]] = {v.key: [] for v in VARIANTS}
        by_key = {v.key: v for v in VARIANTS}
        for number, order in enumerate(plan_rounds([v.key for v in VARIANTS], plan.rounds)):
            for key in order:
                progress(f"Orders: round {number + 1}/{plan.rounds}, {key}")
                label = f"{key} {PATH}"
                if by_key[key].idempotency_key:  # a fresh prefix: no key is ever sent twice
                    requests[key] = wrk_request(by_key[key], token)
                result = run_wrk(
                    servers[by_key[key].server].url + PATH,
                    plan.duration_s,
                    plan.connections,
                    pinning,
                    label,
                    requests[key],
                )
                check_clean(result, label)
                results[key].append(result)
        outcome.rounds = results
        outcome.summaries = summarize(results, BASELINES)
        outcome.orders_written = asyncio.run(_count_orders(url))
        outcome.exported = sink.stats()
    return outcome


def _ratios(variant: Variant, summary: VariantSummary) -> dict[str, float]:
    """Against the bare baselines; the key's row also against Storefront without a key."""
    if variant.idempotency_key:
        return summary.ratios
    return {k: v for k, v in summary.ratios.items() if k != "storefront"}


def rows(outcome: OrderOutcome) -> list[Row]:
    result = []
    for variant in VARIANTS:
        summary = outcome.summaries.get(variant.key)
        if summary is None:
            continue
        ratios = _ratios(variant, summary)
        checks = tuple(
            TargetCheck.of(t, ratios.get(t.baseline, math.nan))
            for t in TARGETS.get(variant.key, ())
        )
        result.append(
            Row(
                section=SECTION,
                subject=variant.label,
                value=summary.rps,
                unit="orders/s",
                p50_ms=summary.p50_ms,
                p99_ms=summary.p99_ms,
                ratios=ratios,
                targets=checks,
            )
        )
    return result


def not_measured(reason: str) -> list[Row]:
    return [Row(section=SECTION, subject=v.label, note=f"not measured: {reason}") for v in VARIANTS]


def raw(outcome: OrderOutcome) -> dict[str, object]:
    return {
        "plan": outcome.plan.__dict__,
        "rounds": {key: [r.as_dict() for r in results] for key, results in outcome.rounds.items()},
        "orders_written": outcome.orders_written,
        "otlp_sink": outcome.exported,
    }
