"""Dapr: the programmatic subscription, its YAML twin in config/dapr/, and pushed CloudEvents
answered SUCCESS, RETRY or DROP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockctl.core.catalog import TOPICS
from stockctl.core.projection import CacheKeys
from tests.apiutil import RESERVE, Api, api_on, seed, unique
from tests.dbutil import outbox_events

DAPR_DIR = Path(__file__).resolve().parents[2] / "config" / "dapr"
CLOUDEVENTS = {"content-type": "application/cloudevents+json", **RESERVE}


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    with api_on(sqlite_url) as api:
        yield api


@pytest.fixture
def both(database_url: str) -> Iterator[Api]:
    with api_on(database_url) as api:
        yield api


def envelope(kind: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "tests/dapr",
        "type": kind,
        "datacontenttype": "application/json",
        "time": "2024-11-09T10:00:00Z",
        "data": data,
        **extra,
    }


def stock_data(p: str, w: str, version: Any, available: int, reserved: int = 0) -> dict[str, Any]:
    return {
        "product_id": p,
        "warehouse_id": w,
        "quantity_available": available,
        "quantity_reserved": reserved,
        "low_stock_threshold": 5,
        "version": version,
        "delta": 1,
    }


def push(api: Api, route: str, event: Any) -> str:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    r = api.client.post(route, content=body, headers=CLOUDEVENTS)
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def test_subscribe_lists_every_topic_and_the_yaml_declares_the_same(api: Api) -> None:
    r = api.client.get("/dapr/subscribe")
    assert r.status_code == 200, r.text
    subs = r.json()
    assert sorted(s["topic"] for s in subs) == sorted(TOPICS)
    assert {s["pubsubname"] for s in subs} == {"pubsub-redis"}
    routes = {s["topic"]: s["route"] for s in subs}
    assert routes["warehouse.stock.updated"] == "/events/stock-updated"  # the guide's route
    assert routes["order.cancelled"] == "/events/order-cancelled"
    assert len(set(routes.values())) == len(routes)
    paths = api.client.get("/openapi.json").json()["paths"]
    for route in routes.values():
        assert route.startswith("/events/") and "post" in paths[route], route

    docs = [d for d in yaml.safe_load_all((DAPR_DIR / "subscriptions.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Subscription"}
    declared = {d["spec"]["topic"]: d["spec"]["routes"]["default"] for d in docs}
    assert declared == routes
    assert len(docs) == len(declared)  # no topic declared twice
    assert {d["spec"]["pubsubname"] for d in docs} == {"pubsub-redis"}
    component = yaml.safe_load((DAPR_DIR / "pubsub-redis.yaml").read_text())
    assert component["kind"] == "Component" and component["spec"]["type"] == "pubsub.redis"
    assert component["metadata"]["name"] == "pubsub-redis"


@pytest.mark.parametrize(
    ("name", "url", "expected"),
    [
        (
            "pubsub-redis-cluster.yaml",
            "redis+cluster://redis-0:6379,redis-1:6379,redis-2:6379",
            {"redisType": "cluster"},
        ),
        (
            "pubsub-redis-failover.yaml",
            "redis+sentinel://sentinel-0:26379,sentinel-1:26379,sentinel-2:26379/mymaster/0",
            {"failover": "true", "sentinelMasterName": "mymaster", "redisDB": "0"},
        ),
    ],
)
def test_the_cluster_and_failover_components_name_what_the_redis_url_names(
    name: str, url: str, expected: dict[str, str]
) -> None:
    """Each Dapr component YAML and the redis_url its comment gives reach the same Redis."""
    from stockctl.redis.topology import parse_redis_url

    text = (DAPR_DIR / name).read_text()
    assert url in text
    component = yaml.safe_load(text)
    assert component["kind"] == "Component" and component["spec"]["type"] == "pubsub.redis"
    assert component["metadata"]["name"] == "pubsub-redis"
    meta = {m["name"]: m.get("value") for m in component["spec"]["metadata"]}
    assert {k: meta.get(k) for k in expected} == expected
    target = parse_redis_url(url)
    hosts = ",".join(f"{h}:{p}" for h, p in target.nodes)
    assert meta["redisHost"].split("#")[0].strip() == hosts
    assert meta["consumerID"] == "catalog"
    if target.master is not None:
        assert meta["sentinelMasterName"] == target.master


def test_pushed_stock_updated_updates_the_cache(both: Api) -> None:
    (p,), (w1, w2) = seed(both.sc, 1, 2)
    keys = CacheKeys(both.prefix)
    cache = both.app.cache()
    assert both.client.get(f"/v1/products/{p}").json()["warehouses"] == {w1: 10, w2: 10}

    # a change committed in the database; its event is pushed as Dapr would push it
    both.sc.set_stock(p, w1, 77)
    both.sc.reserve(p, w1, 2)
    published = [e["event"] for e in outbox_events(both.sc, p)]
    updated = [e for e in published if e["type"] == "warehouse.stock.updated"][-1]
    reserved = [e for e in published if e["type"] == "warehouse.stock.reserved"][-1]
    assert cache.get_keys([keys.warehouse(p, w1)]) == ["10"]  # nothing processed it yet
    assert push(both, "/events/stock-updated", updated) == "SUCCESS"
    assert cache.get_keys([keys.warehouse(p, w1), keys.warehouse(p, w2)]) == ["77", "10"]
    assert cache.get_keys([keys.available(p), keys.total(p)]) == ["87", "87"]
    if both.redis is not None:  # the runbooks' plain GET
        assert both.get_key(f"stock:{p}:warehouse:{w1}") == "77"
    assert push(both, "/events/stock-reserved", reserved) == "SUCCESS"
    assert both.client.get(f"/v1/products/{p}").json()["warehouses"] == {w1: 75, w2: 10}

    # a replay and an older version change nothing
    assert push(both, "/events/stock-updated", updated) == "SUCCESS"
    first = [e for e in published if e["data"]["warehouse_id"] == w1][0]
    assert push(both, "/events/stock-updated", first) == "SUCCESS"
    assert cache.get_keys([keys.warehouse(p, w1)]) == ["75"]

    # Dapr's own wrapping of a plain payload, on another stock route
    both.sc.adjust(p, w2, -3, reason="damaged")
    adjusted = outbox_events(both.sc, p)[-1]["event"]
    assert adjusted["type"] == "warehouse.stock.adjusted"
    wrapped = envelope("com.dapr.event.sent", adjusted["data"], topic="warehouse.stock.adjusted")
    assert push(both, "/events/stock-adjusted", wrapped) == "SUCCESS"
    assert cache.get_keys([keys.warehouse(p, w2)]) == ["7"]

    # a product the cache does not hold yet is loaded whole from the database
    (q,), _ = seed(both.sc, 1, 1)
    both.sc.receive(q, w1, 5)
    event = outbox_events(both.sc, q)[-1]["event"]
    assert push(both, "/events/stock-updated", event) == "SUCCESS"
    assert cache.get_keys([keys.warehouse(q, w1), keys.available(q)]) == ["5", "15"]

    metrics = both.client.get("/metrics").text
    assert 'catalog_stock_events_received_total{transport="dapr"} 6.0' in metrics
    # the replay is stale, not a duplicate: stock events get no marker, their version guards
    for result, n in (("applied", 3), ("stale", 2), ("filled", 1)):
        assert f'catalog_stock_events_processed_total{{result="{result}"}} {n}.0' in metrics
    assert 'catalog_stock_events_processed_total{result="duplicate"}' not in metrics
    assert "catalog_stock_event_processing_duration_seconds_count 6.0" in metrics


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b"{}",
        json.dumps({**envelope("warehouse.stock.updated", {}), "specversion": "0.3"}).encode(),
        json.dumps({k: v for k, v in envelope("x", {}).items() if k != "id"}).encode(),
        json.dumps(envelope("warehouse.stock.updated", None)).encode(),
        json.dumps(envelope("warehouse.stock.updated", {"product_id": "P1"})).encode(),
        json.dumps(envelope("warehouse.stock.updated", stock_data("P1", "W1", 1, -5))).encode(),
        json.dumps(envelope("warehouse.stock.updated", stock_data("bad id", "W1", 1, 5))).encode(),
        json.dumps(envelope("warehouse.stock.updated", stock_data("P1", "W1", True, 5))).encode(),
        json.dumps(envelope("order.cancelled", {"order": "x"})).encode(),
        json.dumps(envelope("order.cancelled", {"order_id": "x" * 1000})).encode(),
        json.dumps(envelope("com.dapr.event.sent", {})).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
def test_malformed_push_is_dropped(api: Api, body: bytes) -> None:
    assert push(api, "/events/stock-updated", body) == "DROP"


def test_push_with_redis_down_is_retry(sqlite_url: str) -> None:
    with api_on(sqlite_url, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=1) as api:
        (p,), (w,) = seed(api.sc, 1, 1)
        event = envelope("warehouse.stock.updated", stock_data(p, w, 9, 3))
        assert push(api, "/events/stock-updated", event) == "RETRY"
        cancel = envelope("order.cancelled", {"order_id": "ord-1"})
        assert push(api, "/events/order-cancelled", cancel) == "RETRY"
        # malformed stays DROP: it will never succeed, dependency or not
        assert push(api, "/events/stock-updated", b"{") == "DROP"


def test_order_cancelled_push_releases_the_order(both: Api) -> None:
    (p,), (w1, w2) = seed(both.sc, 1, 2)
    order, other = unique("ord-"), unique("ord-")
    held = [both.sc.reserve(p, w, 2, order_id=order).id for w in (w1, w2)]
    kept = both.sc.reserve(p, w1, 1, order_id=other).id

    event = envelope("order.cancelled", {"order_id": order})
    assert push(both, "/events/order-cancelled", event) == "SUCCESS"
    assert {both.sc.get_reservation(r).status.value for r in held} == {"RELEASED"}
    assert both.sc.get_reservation(kept).status.value == "ACTIVE"
    assert both.sc.stock(p).total_reserved == 1
    assert push(both, "/events/order-cancelled", event) == "SUCCESS"  # a redelivery: no-op

    failed = envelope("payment.failed", {"order_id": other})
    assert push(both, "/events/payment-failed", failed) == "SUCCESS"
    assert both.sc.get_reservation(kept).status.value == "RELEASED"
    assert both.sc.stock(p).total_reserved == 0
