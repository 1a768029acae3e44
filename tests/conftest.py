"""Shared fixtures: a fresh database per test on SQLite and on a real PostgreSQL, and the three
Redis topologies.

PostgreSQL comes from STOCKCTL_TEST_PG_URL (default: postgres@127.0.0.1:5432). When it is not
reachable the PostgreSQL-backed tests fail, never skip: `make test` starts it first.

Redis: the standalone server (STOCKCTL_TEST_REDIS_URL, db 15), the test Redis Cluster
(STOCKCTL_TEST_REDIS_CLUSTER_URL, 127.0.0.1:7100-7105) and Sentinel group
(STOCKCTL_TEST_REDIS_SENTINEL_URL: sentinels 127.0.0.1:7210-7212, master name stockctl-test,
db 15), which scripts/redis_topologies.sh starts (`make test` runs it; the `redis_topologies`
fixture runs it when they do not answer). All three are shared by every test and every test
process (pytest-xdist), so, as everywhere in this suite, a test writes under a key prefix of
its own and deletes that prefix at the end (`delete_redis_keys`), never FLUSHDB / FLUSHALL.
To break a server on purpose, start a private one (tests/redisutil.py).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import stockctl
from stockctl.library import Stockctl
from tests.redisutil import PrivateRedis

PG_ADMIN_URL = os.environ.get(
    "STOCKCTL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STOCKCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REDIS_CLUSTER_URL = os.environ.get(
    "STOCKCTL_TEST_REDIS_CLUSTER_URL",
    "redis+cluster://127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102",
)
REDIS_SENTINEL_URL = os.environ.get(
    "STOCKCTL_TEST_REDIS_SENTINEL_URL",
    "redis+sentinel://127.0.0.1:7210,127.0.0.1:7211,127.0.0.1:7212/stockctl-test/15",
)
REDIS_TOPOLOGY_URLS = {
    "standalone": REDIS_URL,
    "cluster": REDIS_CLUSTER_URL,
    "sentinel": REDIS_SENTINEL_URL,
}
TOPOLOGY_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "redis_topologies.sh"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's settings or writes their embedded database."""
    for key in list(os.environ):
        if key.startswith("STOCKCTL_") and not key.startswith("STOCKCTL_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def _fresh_pg_database() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"stockctl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _fresh_pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'stockctl.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stockctl.db'}"
    else:
        yield from _fresh_pg_database()


@pytest.fixture
def sc(database_url: str) -> Iterator[Stockctl]:
    """An initialised stockctl on a fresh database of each backend."""
    client = stockctl.connect(database_url)
    client.init()
    try:
        yield client
    finally:
        client.close()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Redis: the standalone server, the test cluster and the sentinel group


@dataclass(frozen=True)
class RedisTarget:
    """A test Redis URL taken apart (stockctl has its own parser: the tests do not lean on it
    to clean up): ``redis[s]://...``, ``redis[s]+cluster://[user:password@]h:p,h:p`` or
    ``redis[s]+sentinel://[user:password@]h:p,h:p/master-name[/db]``."""

    kind: str  # "standalone", "cluster" or "sentinel"
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or the sentinels
    service: str | None = None  # the sentinels' master name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    scheme, sep, rest = url.partition("://")
    base, plus, kind = scheme.partition("+")
    if not sep or base not in ("redis", "rediss") or kind not in ("", "cluster", "sentinel"):
        raise ValueError(f"not a Redis URL: {url!r}")
    if not plus:
        return RedisTarget("standalone")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) or None
    password = unquote(secret) if colon else None
    nodes = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        nodes.append((host or "127.0.0.1", int(port or 6379)))
    parts = [p for p in path.split("/") if p]
    tls = base == "rediss"
    if kind == "cluster":
        return RedisTarget(kind, tuple(nodes), None, 0, username, password, tls)
    if not parts:
        raise ValueError(f"a sentinel URL names its master: {url!r}")
    db = int(parts[1]) if len(parts) > 1 else 0
    return RedisTarget(kind, tuple(nodes), parts[0], db, username, password, tls)


def redis_client(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A redis-py client for any of the three kinds of URL (the sentinel's: its master)."""
    options.setdefault("socket_timeout", 10)
    target = parse_redis_url(url)
    if target.kind == "standalone":
        return redis.Redis.from_url(url, **options)
    options.update(username=target.username, password=target.password, ssl=target.tls)
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **options)
    assert target.service is not None
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={"socket_timeout": options["socket_timeout"], "ssl": target.tls},
    )
    master: redis.Redis = sentinel.master_for(target.service, db=target.db, **options)  # type: ignore[no-untyped-call]
    return master


def delete_redis_keys(url: str, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (on every master of a cluster); how many went.

    The test Redis servers are shared (other suites, pytest-xdist workers), so a test cleans
    up its own prefix: refuses a pattern that is only a wildcard."""
    if not pattern.strip("*?"):
        raise ValueError("delete_redis_keys needs a key prefix, not a bare wildcard")
    client = redis_client(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])  # RedisCluster splits this per slot
        return len(keys)
    finally:
        client.close()


def _topologies_answer() -> bool:
    """The cluster says cluster_state:ok and the sentinels name a master that answers."""
    try:
        cluster = redis_client(REDIS_CLUSTER_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            if not isinstance(cluster, RedisCluster):
                return False
            if cluster.cluster_info().get("cluster_state") != "ok":
                return False
        finally:
            cluster.close()
        master = redis_client(REDIS_SENTINEL_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(master.ping())
        finally:
            master.close()
    except (redis.RedisError, RedisClusterException, OSError):
        return False


@pytest.fixture(scope="session")
def redis_topologies() -> None:
    """The test Redis Cluster and Sentinel group answer: started with
    scripts/redis_topologies.sh if they do not (so plain `pytest` works). Fails, never skips."""
    if _topologies_answer():
        return
    try:
        done = subprocess.run(
            [str(TOPOLOGY_SCRIPT)],
            cwd=TOPOLOGY_SCRIPT.parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{TOPOLOGY_SCRIPT.name} could not start the Redis topologies: {exc}")
    if done.returncode != 0 or not _topologies_answer():
        pytest.fail(
            f"{TOPOLOGY_SCRIPT.name} exited {done.returncode} and the Redis cluster/sentinels "
            f"do not answer:\n{done.stdout}{done.stderr}",
            pytrace=False,
        )


@pytest.fixture(params=list(REDIS_TOPOLOGY_URLS))
def redis_topology_url(request: pytest.FixtureRequest) -> str:
    """The URL of each Redis topology in turn: standalone (REDIS_URL), cluster, sentinel.

    Shared servers: write under a prefix of the test's own and ``delete_redis_keys`` it."""
    if request.param != "standalone":
        request.getfixturevalue("redis_topologies")
    return REDIS_TOPOLOGY_URLS[request.param]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A standalone redis-server of this test's own, for tests that break it."""
    with PrivateRedis() as server:
        yield server
