"""The fuzz harness that keeps every bad input refused at the edge (issue 17).

From the one description in tests/badinput.py, for every operation and every one of its inputs,
hypothesis draws bad values of the input's kind and sends the otherwise valid request with that
one value replaced:

- over HTTP: a 4xx problem document (422 for a body field), never a 5xx;
- on the CLI (in process, ``typer.testing.CliRunner``): exit 2, one line on stderr;
- through the library: ``InvalidInput``;

and in every case the database is unchanged (every row of every table: versions, ledger,
outbox, reservations, idempotency keys). On SQLite and on PostgreSQL (where a NUL byte in text
used to reach the database and fail there). A baseline test sends each valid request once, so
the harness cannot pass by refusing everything.

More examples: STOCKCTL_TEST_FUZZ_EXAMPLES=200 (random instead of the fixed derandomized run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from typer.testing import CliRunner

from stockctl.cli import app as cli_app
from stockctl.errors import InvalidInput
from stockctl.library import Stockctl
from tests import dbutil
from tests.apiutil import PROBLEM, Api, api_on
from tests.badinput import BAD, BAD_ARGV, OPERATIONS, Input, Operation, Values
from tests.conftest import _fresh_pg_database, new_id

EXAMPLES = int(os.environ.get("STOCKCTL_TEST_FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    chosen: Callable[[Callable[..., None]], Callable[..., None]] = settings(
        max_examples=EXAMPLES or default,
        derandomize=not EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    return chosen


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, str]]:
    """One app per backend for the module (a PostgreSQL database costs a CREATE DATABASE);
    each test makes its own product, warehouses and reservation with random ids."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("STOCKCTL_") and "_TEST_" not in k]:
            mp.delenv(key)
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'stockctl.db'}"
            with api_on(url, with_redis=False) as api:
                yield api, url
        else:
            for url in _fresh_pg_database():
                with api_on(url, with_redis=False) as api:
                    yield api, url


@dataclass
class World:
    api: Api
    url: str
    values: Values

    @property
    def sc(self) -> Stockctl:
        return self.api.sc


@pytest.fixture
def world(module_api: tuple[Api, str]) -> World:
    api, url = module_api
    sc = api.sc
    p, a, b = new_id("P"), new_id("A"), new_id("B")
    sc.add_product(p)
    sc.add_warehouse(a)
    sc.add_warehouse(b)
    sc.receive(p, a, 50)
    sc.receive(p, b, 50)
    order = new_id("ORD")
    hold = sc.reserve(p, a, 1, order_id=order)
    values: Values = {
        "product_id": p,
        "warehouse_id": a,
        "from_warehouse_id": a,
        "to_warehouse_id": b,
        "quantity": 1,
        "quantity_available": 40,
        "expect_version": sc.stock(p, a).rows[0].version,
        "low_stock_threshold": 5,
        "delta": 1,
        "reason": "fuzz",
        "reference": "ref-1",
        "ttl_seconds": 60,
        "order_id": order,
        "items": [{"product_id": p, "warehouse_id": a, "quantity": 1}],
        "reservation_id": hold.id,
        "since": "2024-01-01T00:00:00Z",
        "page": 1,
        "limit": 10,
        "product_ids": [p],
    }
    return World(api, url, values)


def _cases(surface: str) -> list[Any]:
    out = []
    for op in OPERATIONS:
        for i in op.inputs:
            if surface == "http" and not op.path:
                continue
            if surface == "cli" and (op.command is None or i.cli is None):
                continue
            if surface == "cli" and op.name == "release-order":
                continue  # the CLI's release --order is the release case with an order
            if surface == "library" and op.library is None:
                continue
            out.append(pytest.param(op, i, id=f"{op.name}-{i.name}"))
    return out


def _with(world: World, i: Input, bad: Any) -> Values:
    values = dict(world.values)
    if i.kind == "items" and isinstance(bad, list):
        bad = [
            {**x, "product_id": world.values["product_id"]}
            if isinstance(x, dict) and x.get("product_id") == "PLACEHOLDER"
            else x
            for x in bad
        ]
    values[i.name] = bad
    return values


def _http(world: World, op: Operation, values: Values) -> Any:
    body = op.body(values)
    return world.api.client.request(op.method, op.url(values), json=body)


def _cli(world: World, op: Operation, values: Values) -> Any:
    argv = ["--database-url", world.url, *op.argv(values)]
    return CliRunner().invoke(cli_app, argv, catch_exceptions=True)


# the baselines: every valid request is accepted, so the refusals below are the bad value's


@pytest.mark.parametrize("op", [o for o in OPERATIONS if o.path], ids=lambda o: o.name)
def test_http_baseline_is_accepted(world: World, op: Operation) -> None:
    response = _http(world, op, world.values)
    assert response.status_code < 300, response.text


@pytest.mark.parametrize("op", [o for o in OPERATIONS if o.command], ids=lambda o: o.name)
def test_cli_baseline_is_accepted(world: World, op: Operation) -> None:
    values = dict(world.values)
    if op.name == "release-order":  # the CLI's release takes a reservation or --order
        argv = ["--database-url", world.url, "release", f"--order={values['order_id']}"]
        result = CliRunner().invoke(cli_app, argv)
    else:
        result = _cli(world, op, values)
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.mark.parametrize("op", [o for o in OPERATIONS if o.library], ids=lambda o: o.name)
def test_library_baseline_is_accepted(world: World, op: Operation) -> None:
    assert op.library is not None
    op.library(world.sc, world.values)


# the refusals


@pytest.mark.parametrize(("op", "i"), _cases("http"))
def test_http_refuses_every_bad_value(world: World, op: Operation, i: Input) -> None:
    @fuzz(12)
    @given(bad=BAD[i.kind])
    def check(bad: Any) -> None:
        before = dbutil.snapshot(world.sc)
        response = _http(world, op, _with(world, i, bad))
        assert 400 <= response.status_code < 500, (bad, response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM), (bad, response.text)
        if not i.in_path:
            assert response.status_code == 422, (bad, response.text)
        assert dbutil.snapshot(world.sc) == before, bad

    check()


@pytest.mark.parametrize(("op", "i"), _cases("cli"))
def test_cli_refuses_every_bad_value(world: World, op: Operation, i: Input) -> None:
    @fuzz(8)
    @given(bad=BAD_ARGV[i.argv_kind or i.kind])
    def check(bad: str) -> None:
        before = dbutil.snapshot(world.sc)
        result = _cli(world, op, _with(world, i, bad))
        assert result.exit_code == 2, (bad, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), bad
        assert dbutil.snapshot(world.sc) == before, bad

    check()


@pytest.mark.parametrize(("op", "i"), _cases("library"))
def test_library_refuses_every_bad_value(world: World, op: Operation, i: Input) -> None:
    assert op.library is not None
    library = op.library

    @fuzz(12)
    @given(bad=BAD[i.kind])
    def check(bad: Any) -> None:
        if i.kind == "items":  # the library takes lines as (product, warehouse, qty) tuples
            assume(isinstance(bad, list) and all(isinstance(x, dict) for x in bad))
        before = dbutil.snapshot(world.sc)
        with pytest.raises(InvalidInput) as info:
            library(world.sc, _with(world, i, bad))
        assert "\n" not in str(info.value)
        assert dbutil.snapshot(world.sc) == before, bad

    check()
