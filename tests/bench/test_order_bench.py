"""The order benchmark sends valid, spread-out orders, each keyed request with a key of its own."""

from __future__ import annotations

from collections import Counter

from bench.components import Pinning, wrk_command
from bench.order_bench import PRODUCTS, VARIANTS, order_bodies, wrk_request
from service.schemas.order import OrderCreate


def test_every_body_is_an_order_storefront_accepts() -> None:
    orders = [OrderCreate.model_validate_json(body) for body in order_bodies()]
    assert all(len(order.items) == 2 for order in orders)


def test_the_orders_spread_over_the_whole_catalogue_once() -> None:
    products = Counter(
        item.product_id
        for body in order_bodies()
        for item in OrderCreate.model_validate_json(body).items
    )
    assert sorted(products) == list(range(1, PRODUCTS + 1))
    assert set(products.values()) == {1}


def test_only_the_keyed_variant_sends_a_numbered_key_fresh_per_run() -> None:
    keyed = {
        v.key for v in VARIANTS if any("Idempotency-Key" in h for h in wrk_request(v, "t").headers)
    }
    assert keyed == {"storefront-key"}
    variant = next(v for v in VARIANTS if v.key == "storefront-key")
    first, second = (
        dict(h.split(": ", 1) for h in wrk_request(variant, "t").headers) for _ in "ab"
    )
    assert first["Idempotency-Key"].endswith("-{n}")
    assert first["Idempotency-Key"] != second["Idempotency-Key"]
    assert first["Authorization"] == "Bearer t"


def test_wrk_gets_the_bodies_and_headers_after_its_own_options() -> None:
    request = wrk_request(VARIANTS[0], "t")
    argv = wrk_command("http://127.0.0.1:1/api/v1/orders", 1, 4, Pinning(None, None), request)
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "POST",
        "application/json",
        "\n".join(order_bodies()),
        "Authorization: Bearer t",
    ]
