"""The CLI over the HTTP API (``--api-url`` / ``STOCKCTL_API_URL``, ``--token``) against a real
``stockctl serve``, compared with the local CLI (``STOCKCTL_DATABASE_URL``) on the same database:
the same JSON for stock show, reserve, confirm, release, reservations show and checkout, the
same exit codes (insufficient stock 1, unknown reservation 2, unreachable API 3), and
``warm-cache --via-api`` filling the embedded cache of another database.

Most comparisons run the CLI's entry point (``stockctl.cli.main``) in this process, to keep the
suite fast; the server is always a real process, and a few commands run as real ``stockctl``
processes too (configured by the environment only).
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import stockctl
from stockctl.cli import main
from stockctl.library import Stockctl
from tests.clientutil import COMMAND, Server, clean_env, free_port, serve
from tests.conftest import new_id

TOKEN = "cli-" + "3e9a7c5b1d0f2e4a"
TOKENS = json.dumps([{"name": "cli", "token": TOKEN, "scopes": ["admin"]}])


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)


@dataclass
class Site:
    db: str
    server: Server
    workdir: Path

    def process(self, env: dict[str, str], args: tuple[str, ...]) -> Run:
        """``stockctl`` as a real process, configured by ``env`` only."""
        done = subprocess.run(
            [*COMMAND, *args],
            env=clean_env(XDG_DATA_HOME=str(self.workdir / "xdg"), **env),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return Run(done.returncode, done.stdout, done.stderr)

    def local(self, *args: str) -> Run:
        return in_process({"STOCKCTL_DATABASE_URL": self.db}, args)

    def remote(self, *args: str) -> Run:
        """Through the API; no database configured at all (the embedded default is unused)."""
        return in_process({}, ("--api-url", self.server.url, "--token", TOKEN, *args))

    def both(self, *args: str) -> tuple[Run, Run]:
        return self.local(*args), self.remote(*args)


def in_process(env: dict[str, str], args: tuple[str, ...]) -> Run:
    """The CLI's entry point (what the ``stockctl`` script runs) in this process."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env), mock.patch.object(sys, "argv", ["stockctl", *args]):
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
            main()
    assert "Traceback" not in err.getvalue(), err.getvalue()
    code = done.value.code
    return Run(code if isinstance(code, int) else 0, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("remote-cli")
    db = f"sqlite:///{workdir / 'stockctl.db'}"
    with stockctl.connect(db) as sc:
        sc.init()
        sc.add_warehouse("W-1")
        sc.add_warehouse("W-2", priority=200)
    with serve(db, workdir, STOCKCTL_API_TOKENS=TOKENS) as server:
        yield Site(db, server, workdir)


@pytest.fixture
def sc(site: Site) -> Iterator[Stockctl]:
    with stockctl.connect(site.db) as lib:
        yield lib


def product(sc: Stockctl, w1: int = 10, w2: int = 0) -> str:
    p = new_id("P")
    sc.add_product(p)
    if w1:
        sc.receive(p, "W-1", w1)
    if w2:
        sc.receive(p, "W-2", w2)
    return p


def one_line_error(run: Run, code: int) -> str:
    assert run.code == code, f"exit {run.code}: {run.err!r}"
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert run.out == ""
    return lines[0]


def test_stock_show_is_the_same_json(site: Site, sc: Stockctl) -> None:
    p = product(sc, 10, 4)
    sc.reserve(p, "W-1", 3)
    local, remote = site.both("stock", "show", p, "-o", "json")
    assert remote.json() == local.json()
    assert local.json()["total_reserved"] == 3 and len(local.json()["warehouses"]) == 2
    local, remote = site.both("stock", "show", p, "-w", "W-2", "-o", "json")
    assert remote.json() == local.json()
    assert [w["warehouse_id"] for w in local.json()["warehouses"]] == ["W-2"]


def test_reserve_confirm_release_show_are_the_same_json(site: Site, sc: Stockctl) -> None:
    p = product(sc, 10)
    key = f"K-{uuid.uuid4().hex[:8]}"
    reserve = ("reserve", p, "W-1", "3", "--ttl", "10m", "--order", "O-1", "--idempotency-key", key)
    remote = site.remote(*reserve, "-o", "json").json()
    local = site.local(*reserve, "-o", "json").json()  # the same key: the same hold, replayed
    assert remote == local
    assert (local["status"], local["quantity"], local["order_id"]) == ("ACTIVE", 3, "O-1")
    rid = str(local["id"])

    shown_local, shown_remote = site.both("reservations", "show", rid, "-o", "json")
    assert shown_remote.json() == shown_local.json() == local

    confirmed = site.remote("confirm", rid, "-o", "json").json()
    assert confirmed["status"] == "CONFIRMED"
    assert site.local("confirm", rid, "-o", "json").json() == confirmed  # idempotent: same hold
    assert site.local("reservations", "show", rid, "-o", "json").json() == confirmed

    released = site.remote("release", rid, "--reason", "cancelled", "-o", "json").json()
    assert released["status"] == "RELEASED"
    assert site.local("release", rid, "-o", "json").json() == released
    shown_local, shown_remote = site.both("reservations", "show", rid, "-o", "json")
    assert shown_remote.json() == shown_local.json() == released
    assert sc.stock(p).total_reserved == 0

    # a fresh hold each way (no key): the same shape, field for field
    one = site.local("reserve", p, "2", "-o", "json").json()
    env = {"STOCKCTL_API_URL": site.server.url, "STOCKCTL_API_TOKEN": TOKEN}
    two = site.process(env, ("reserve", p, "2", "-o", "json")).json()  # a real process
    assert list(one) == list(two) and one["id"] != two["id"]
    stamps = ("id", "created_at", "expires_at", "updated_at")
    assert {k: v for k, v in one.items() if k not in stamps} == {
        k: v for k, v in two.items() if k not in stamps
    }
    assert sc.stock(p).total_reserved == 4


def test_checkout_is_the_same_json(site: Site, sc: Stockctl) -> None:
    p, q = product(sc, 5), product(sc, 0, 6)
    key = f"C-{uuid.uuid4().hex[:8]}"
    args = ("checkout", "-i", f"{p}:W-1:2", "-i", f"{q}:4", "--order", "O-7")
    remote = site.remote(*args, "--idempotency-key", key, "-o", "json").json()
    local = site.local(*args, "--idempotency-key", key, "-o", "json").json()
    assert remote == local
    assert sorted((r["product_id"], r["warehouse_id"], r["quantity"]) for r in local) == sorted(
        [(p, "W-1", 2), (q, "W-2", 4)]
    )
    assert (sc.stock(p).total_reserved, sc.stock(q).total_reserved) == (2, 4)


def test_stock_writes_history_and_the_lifecycle_go_through_the_api(
    site: Site, sc: Stockctl
) -> None:
    p = product(sc, 10)
    received = site.remote("stock", "receive", p, "W-2", "4", "--reason", "po-1", "-o", "json")
    assert received.json()["quantity_available"] == 4
    adjusted = site.remote("stock", "adjust", p, "W-1", "-3", "--reason", "damage", "-o", "json")
    assert adjusted.json()["quantity_available"] == 7
    set_ = site.remote("stock", "set", p, "W-2", "6", "--expect-version", "1", "-o", "json")
    assert set_.json()["quantity_available"] == 6
    moved = site.remote("stock", "transfer", p, "W-1", "W-2", "2", "-o", "json").json()
    assert [(w["warehouse_id"], w["quantity_available"]) for w in moved] == [
        ("W-1", 5),
        ("W-2", 8),
    ]
    assert [(r.warehouse_id, r.on_hand) for r in sc.stock(p).rows] == [
        ("W-1", 5),
        ("W-2", 8),
    ]
    local, remote = site.both("stock", "history", p, "-o", "json")
    assert remote.json() == local.json()
    kinds = [m["kind"] for m in local.json()]
    assert kinds[:5] == ["transfer_in", "transfer_out", "set", "adjust", "receive"], kinds

    held = site.remote("reserve", p, "W-1", "2", "--order", "O-9", "-o", "json").json()
    extended = site.remote("extend", str(held["id"]), "--ttl", "2h", "-o", "json").json()
    assert extended["expires_at"] > held["expires_at"]
    local, remote = site.both("reservations", "list", "--product", p, "-o", "json")
    assert remote.json() == local.json() and [r["id"] for r in local.json()] == [held["id"]]
    site.remote("confirm", str(held["id"]))
    fulfilled = site.remote("fulfil", str(held["id"]), "-o", "json").json()
    assert fulfilled["status"] == "FULFILLED"
    assert sc.stock(p, "W-1").rows[0].on_hand == 3
    assert one_line_error(site.remote("stock", "adjust", p, "W-1", "-9", "--reason", "x"), 1)


def test_exit_codes_and_errors_are_the_same(site: Site, sc: Stockctl) -> None:
    p = product(sc, 2)
    missing = str(2**62 + random.randrange(2**40))
    cases = [
        (("reserve", p, "W-1", "5"), 1),  # insufficient stock
        (("checkout", "-i", f"{p}:W-1:3"), 1),
        (("confirm", missing), 2),  # unknown reservation
        (("release", missing), 2),
        (("reservations", "show", missing), 2),
        (("confirm", "not-a-uuid"), 2),
        (("stock", "show", new_id("P-none")), 2),
    ]
    for args, code in cases:
        local, remote = site.both(*args)
        assert one_line_error(local, code) == one_line_error(remote, code), args
    assert sc.stock(p).total_reserved == 0


UNREACHABLE = [
    ("stock", "show", "P-1", "-o", "json"),
    ("reserve", "P-1", "W-1", "1"),
    ("checkout", "-i", "P-1:1"),
    ("confirm", str(2**62 + 1)),
    ("release", str(2**62 + 2)),
    ("reservations", "show", str(2**62 + 3)),
]


def test_unreachable_api_exits_3(site: Site) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ThreadPoolExecutor(2) as pool:
        process = pool.submit(site.process, {"STOCKCTL_API_URL": dead}, ("reserve", "P-1", "1"))
        no_retry = {"STOCKCTL_CLIENT_RETRIES": "0"}  # the process above retries (the default)
        here = [in_process(no_retry, ("--api-url", dead, *a)) for a in UNREACHABLE]
        for run in [process.result(), *here]:
            message = one_line_error(run, 3)
            assert dead in message and "unreachable" in message


def test_a_bad_token_is_refused_like_bad_input(site: Site) -> None:
    run = site.remote("--token", "x" * 16, "stock", "show", "P")
    assert "invalid bearer token" in one_line_error(run, 2)


def test_warm_cache_via_api_fills_the_embedded_cache(site: Site, sc: Stockctl) -> None:
    p = product(sc, 7, 3)
    sc.reserve(p, "W-2", 1)
    other = f"sqlite:///{site.workdir / f'cache-{uuid.uuid4().hex[:6]}.db'}"
    with stockctl.connect(other) as elsewhere:
        elsewhere.init()
    args = ("--token", TOKEN, "warm-cache", "--via-api", site.server.url, "-o", "json")
    run = site.process({"STOCKCTL_DATABASE_URL": other}, args)
    warmed = run.json()
    rows = sc.app.store.count_rows()["inventory"]
    assert warmed["rows"] == rows and warmed["products"] >= 1

    with stockctl.connect(other) as elsewhere:
        cached = elsewhere.app.cache().get_products([p])[p]
        assert elsewhere.app.store.count_rows()["inventory"] == 0  # none of its own: all via API
    assert cached is not None
    assert sorted((r.warehouse_id, r.on_hand, r.reserved) for r in cached.rows) == [
        ("W-1", 7, 0),
        ("W-2", 3, 1),
    ]
