"""The alert rules and the dashboard: valid for Prometheus, and every metric they query is one
stockctl really exports at ``/metrics``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import stockctl
from stockctl.core.catalog import Outcome
from stockctl.core.envelope import parse
from stockctl.daemons.api.app import create_app
from stockctl.store.tables import outbox

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "stock-system.json"

# -- PromQL: the metric names an expression selects ----------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_DURATION = re.compile(r"(?<![A-Za-z0-9_:])(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_:])")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Identifiers in selector position: not a function or aggregation (followed by ``(``),
    not a label name (inside ``{}``, ``by (...)``), not a keyword, string, number or range."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _DURATION.sub(" ", text)  # offset 5m, @ ... 1h30m
    text = _NUMBER.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum(rate(a_total{result="failed", x=~"y(z)"}[5m])) / clamp_min(b_total, 1e-9)',
            {"a_total", "b_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, route) (rate(h_bucket[$__rate_interval])))",
            {"h_bucket"},
        ),
        (
            "max(q_size / clamp_min(q_capacity, 1)) >= 1 and on(job) up",
            {"q_size", "q_capacity", "up"},
        ),
        ("sum without (instance) (c_total offset 1h30m) > bool 0.5", {"c_total"}),
        ("x_count / ignoring(le) x_sum", {"x_count", "x_sum"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_exprs() -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            here = f"{where}/{node.get('title', '')}".rstrip("/")
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found[f"{here}#{len(found)}"] = value
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(json.loads(DASHBOARD.read_text(encoding="utf-8")), "")
    return found


# -- the files ------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is not installed: run scripts/services.sh (Debian package 'prometheus')"
    )
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in done.stdout


def test_the_seed_alerts_are_all_there_with_their_severity() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    severity = {r["alert"]: r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    assert severity == {
        "StockEventDeliveryFailures": "critical",
        "StockCacheMissRateHigh": "critical",
        "WorkerQueueOverflow": "critical",
        "DatabaseConnectionsExhausted": "critical",
        "StockEventLatencyHigh": "warning",
        "StockCacheHitRateLow": "warning",
        "StockEventProcessingSlow": "warning",
        "DatabaseQueriesSlow": "warning",
    }
    for g in rules["groups"]:
        for r in g["rules"]:
            assert "stockctl diagnose" in r["annotations"]["runbook"], r["alert"]


def test_the_dashboard_has_the_four_views_and_every_panel_queries() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows = [p["title"] for p in board["panels"] if p.get("type") == "row"]
    assert rows == ["Overview", "Event processing", "Cache", "Database"]
    graphs = [p for p in board["panels"] if p.get("type") != "row"]
    assert graphs and all(p.get("targets") for p in graphs)


# -- the names exist ------------------------------------------------------------------------


@dataclass
class Scrape:
    events: int
    types: dict[str, str] = field(default_factory=dict)  # sample name -> family type
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        return sum(
            v for (n, ls), v in self.values.items() if n == name and set(labels.items()) <= set(ls)
        )


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[Scrape]:
    """Sample name -> family type, from ``/metrics`` of the API after a few requests and a
    recorded worker batch (as ``stockctl serve`` plus a worker in the same registry)."""
    sc = stockctl.connect(f"sqlite:///{tmp_path / 'metrics.db'}")
    sc.init()
    try:
        app = sc.app
        sc.add_warehouse("W1")
        sc.add_product("P1")
        sc.receive("P1", "W1", 10)
        sc.reserve("P1", "W1", 2, order_id="o-1")
        client = TestClient(create_app(app))
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/products/P1").status_code == 200  # miss, fills
        assert client.get("/api/v1/products/P1").status_code == 200  # hit
        assert client.get("/api/v1/products/NOPE").status_code == 404
        assert client.get("/health/ready").status_code == 200

        with app.store.engine.connect() as conn:
            payloads = [(r.topic, r.payload) for r in conn.execute(outbox.select())]
        events = [parse(payload, topic=topic) for topic, payload in payloads]
        assert events and all(e.time is not None for e in events)
        app.metrics().record_batch(
            "redis", len(events) + 1, Outcome(applied=len(events)), 1, 0.004, events
        )
        response = client.get("/metrics")
        assert response.status_code == 200
        scrape = Scrape(len(events))
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                scrape.types[sample.name] = family.type
                key = (sample.name, tuple(sorted(sample.labels.items())))
                scrape.values[key] = sample.value
        client.close()
        yield scrape
    finally:
        sc.close()


@pytest.fixture
def exported(scraped: Scrape) -> dict[str, str]:
    return scraped.types


def test_the_worker_batch_and_requests_show_in_metrics(exported: dict[str, str]) -> None:
    for name in (
        "catalog_stock_events_received_total",
        "catalog_stock_events_processed_total",
        "catalog_stock_event_latency_seconds_bucket",
        "catalog_cache_hits_total",
        "catalog_cache_misses_total",
        "stockctl_http_requests_total",
        "stockctl_http_request_duration_seconds_bucket",
        "stockctl_db_query_duration_seconds_count",
    ):
        assert name in exported, name


@pytest.mark.parametrize("source", ["alerts", "dashboard"], ids=["alerts.yml", "stock-system.json"])
def test_every_queried_metric_is_exported(source: str, exported: dict[str, str]) -> None:
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    assert len(exprs) >= 8
    missing: dict[str, set[str]] = {}
    for where, expr in exprs.items():
        names = metric_names(expr)
        assert names, f"no metric found in {where}: {expr}"
        for name in names:
            if name not in exported:
                missing.setdefault(where, set()).add(name)
                continue
            # a suffix must match its family: _bucket of a histogram, _total of a counter
            if name.endswith("_bucket"):
                assert exported[name] == "histogram", name
            elif name.endswith("_total"):
                assert exported[name] == "counter", name
    assert not missing, f"queried but not exported: {missing}"


def test_the_recorded_values_are_what_happened(scraped: Scrape) -> None:
    n = scraped.events
    assert scraped.total("catalog_stock_events_received_total", transport="redis") == n + 1
    assert scraped.total("catalog_stock_events_processed_total", result="applied") == n
    assert scraped.total("catalog_stock_events_processed_total", result="failed") == 1
    assert scraped.total("catalog_stock_event_latency_seconds_count") == n
    assert scraped.total("catalog_stock_event_processing_duration_seconds_count") == 1
    assert scraped.total("catalog_cache_misses_total") >= 1
    assert scraped.total("catalog_cache_hits_total") >= 1
    assert scraped.total("stockctl_http_requests_total", status="404") == 1
    assert scraped.total("catalog_worker_queue_capacity") == 1000
    assert scraped.total("catalog_db_connections_max") == 100
