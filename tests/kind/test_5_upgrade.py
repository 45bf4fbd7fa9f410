"""Upgrade with no downtime: the image is built again under a new tag and `spec.image.tag`
changes while a client inside the cluster keeps reading and ordering through the API's Service.
The new image's migration Job runs, every component rolls out, and the client saw no failed
request: the readiness probe, the `preStop` pause, `maxUnavailable: 0` and the
PodDisruptionBudget exist for exactly this."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.components.kind import run_script, tool_versions
from tests.components.kube import wait_for
from tests.kind.conftest import Shop, condition, login, start_traffic

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]


def rolled_out(shop: Shop, image: str) -> bool:
    """Every app Deployment runs `image`, fully updated and available, and the Storefront says
    Ready for its current generation."""
    for component in ("api", "worker", "scheduler"):
        deployment = shop.cluster.get("deployment", f"{shop.name}-{component}", shop.namespace)
        spec, status = deployment["spec"], deployment["status"]
        if spec["template"]["spec"]["containers"][0]["image"] != image:
            return False
        wanted = spec.get("replicas", 1)
        if not (
            status.get("updatedReplicas") == status.get("readyReplicas") == wanted
            and status.get("replicas") == wanted
        ):
            return False
    body = shop.cluster.get("storefront", shop.name, shop.namespace)
    return bool(
        body["status"].get("observedGeneration") == body["metadata"]["generation"]
        and condition(body, "Ready").get("status") == "True"
    )


def test_an_image_upgrade_drops_no_request(shop: Shop, api_url: str) -> None:
    repository = tool_versions()["APP_REPOSITORY"]
    new_tag = f"{shop.cluster.tag}-next"  # the same code, built again: a new image
    image = f"{repository}:{new_tag}"
    run_script("images.sh", "--tag", new_tag, "app")
    shop.cluster.run("kind", "load", "docker-image", "--name", shop.cluster.name, image)

    with httpx.Client(base_url=api_url, timeout=30) as api:
        product = api.post(
            "/api/v1/products",
            json={
                "name": "Upgrade",
                "price": 3,
                "sku": f"UP-{uuid.uuid4().hex[:8]}",
                "stock": 1_000_000,
            },
            headers=shop.admin_headers(api),
        )
        assert product.status_code == 201, product.text
        email = f"steady-{uuid.uuid4().hex[:8]}@example.com"
        api.post(
            "/api/v1/users", json={"email": email, "name": "Sam", "password": "steady-shopper"}
        )
        token = login(api, email, "steady-shopper")["Authorization"].removeprefix("Bearer ")
    client = start_traffic(
        shop.cluster,
        shop,
        f"shop-{uuid.uuid4().hex[:6]}",
        "shop",
        "--product",
        str(product.json()["id"]),
        env={"SHOPPER_TOKEN": token},
    )
    wait_for(
        lambda: (client.progress() or {}).get("requests", 0) > 50,
        timeout=120,
        interval=2,
        what="the client under way",
    )

    before = shop.status()["migration"]
    shop.cluster.kubectl(
        "patch",
        f"sf/{shop.name}",
        "--namespace",
        shop.namespace,
        "--type",
        "merge",
        "--patch",
        json.dumps({"spec": {"image": {"tag": new_tag}}}),
    )
    wait_for(lambda: rolled_out(shop, image), timeout=600, interval=3, what="the rollout")
    migration = shop.status()["migration"]
    assert migration != before
    assert shop.cluster.get("job", migration, shop.namespace)["status"].get("succeeded") == 1
    # A little more traffic on the new pods, then the client's count.
    progress = client.progress() or {}
    wait_for(
        lambda: (client.progress() or {}).get("requests", 0) > progress.get("requests", 0) + 100,
        timeout=120,
        interval=2,
        what="traffic after the rollout",
    )
    client.stop()
    summary = client.summary()
    print(
        f"upgrade under traffic: {summary['requests']} requests, {summary['failures']} failed, "
        f"{summary['retried']} sent again after a connection closed without an answer"
    )
    assert summary["requests"] > 200
    assert summary["failures"] == 0, summary["errors"]
