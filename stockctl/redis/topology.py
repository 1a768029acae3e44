"""One setting, three Redis topologies, as Dapr's Redis components support them.

``redis_url`` names which:

    redis://[user:pass@]host:port[/db]              standalone (``rediss://``: TLS)
    redis+cluster://[user:pass@]h:p[,h:p...]        Redis Cluster from seed nodes (db 0)
    redis+sentinel://[user:pass@]h:p[,h:p...]/MASTER[/db]
                                                    the master these sentinels name, followed
                                                    through failover

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS. The user and password are the data
nodes'; sentinels that need their own take ``?sentinel_password=...`` (and
``sentinel_username=``). Nothing here connects at import time.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote

from stockctl.errors import InvalidInput

Kind = Literal["standalone", "cluster", "sentinel"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)$")
_MASTER = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_QUERY = {"sentinel_username", "sentinel_password"}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``redis_url``: where Redis is and how it is laid out."""

    kind: Kind
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    master: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    shown: str = ""

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    def masked(self) -> str:
        """The URL as given, its passwords replaced by ``***``."""
        return self.shown


def parse_redis_url(url: str) -> RedisTarget:
    """Parse and check a ``redis_url``; ``InvalidInput`` (naming the setting) if it is wrong."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise _bad("use redis://, rediss://, redis+cluster:// or redis+sentinel://")
    kind, tls = _SCHEMES[scheme.lower()]
    rest, _, query_text = rest.partition("?")
    rest, _, _fragment = rest.partition("#")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    nodes = tuple(_node(n) for n in netloc.split(","))
    if kind == "standalone" and len(nodes) != 1:
        raise _bad("a standalone redis:// URL names one host:port")
    parts = path.split("/") if path else []
    master = None
    if kind == "sentinel":
        if not parts or not parts[0]:
            raise _bad("redis+sentinel:// needs the master's name: redis+sentinel://h:p/MASTER")
        master = unquote(parts.pop(0))
        if not _MASTER.match(master):
            raise _bad(f"sentinel master name {master!r} is not a name")
    if len(parts) > 1 or (parts and kind == "cluster" and parts[0] not in ("", "0")):
        raise _bad("Redis Cluster has only db 0" if kind == "cluster" else "too many path parts")
    db = _db(parts[0]) if parts and parts[0] else 0
    extra = dict(parse_qsl(query_text, keep_blank_values=True)) if query_text else {}
    unknown = sorted(set(extra) - _QUERY)
    if unknown:
        raise _bad(f"unknown parameter(s) {', '.join(unknown)}")
    if extra and kind != "sentinel":
        raise _bad("sentinel_username / sentinel_password only apply to redis+sentinel://")
    return RedisTarget(
        kind,
        nodes,
        db,
        master,
        tls,
        username,
        password,
        extra.get("sentinel_username") or None,
        extra.get("sentinel_password") or None,
        _shown(scheme, username, password, netloc, path, extra),
    )


def _shown(
    scheme: str,
    username: str | None,
    password: str | None,
    netloc: str,
    path: str,
    extra: dict[str, str],
) -> str:
    auth = ""
    if username or password is not None:
        auth = quote(username or "", safe="") + (":***" if password is not None else "") + "@"
    query = "&".join(
        f"{k}={'***' if k == 'sentinel_password' else quote(v, safe='')}" for k, v in extra.items()
    )
    tail = (f"/{path}" if path else "") + (f"?{query}" if query else "")
    return f"{scheme}://{auth}{netloc}{tail}"


def _node(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "6379"
    if not host or not _HOST.match(host):
        raise _bad(f"{text!r} is not host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65_535:
        raise _bad(f"port {port_text!r} of {host} is not a number from 1 to 65535")
    return host.strip("[]"), int(port_text)


def _db(text: str) -> int:
    if not text.isdigit() or int(text) > 10_000:
        raise _bad(f"database {text!r} is not a number from 0")
    return int(text)


def _bad(why: str) -> InvalidInput:
    return InvalidInput(f"invalid settings: redis_url: {why}")


def connect(target: RedisTarget, timeout: float, *, fail_fast: bool = False, **options: Any) -> Any:
    """A client for the target: ``redis.Redis`` (standalone; sentinel, through a pool that asks
    the sentinels for the master on every new connection and drops connections to a demoted
    one) or ``redis.RedisCluster`` (slot map from the seed nodes, refreshed on MOVED).

    ``timeout`` bounds each connect and each reply. ``fail_fast``: a command that times out or
    cannot connect fails at once, never retried (redis-py otherwise retries up to 10 times with
    backoff, so a stalled server holds a call for many times ``timeout``): for reads that have
    somewhere else to go, and for probes."""
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    if fail_fast:
        options.setdefault("retry", Retry(NoBackoff(), 0))
    else:  # a reconnect or two (a failover, a restart) but a stall costs ~3 x timeout, not 10
        options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        **options,
    }
    if target.tls:
        common["ssl"] = True
    if target.kind == "cluster":
        try:  # reads the slot map now: no seed node answering is an outage, not a bug
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],  # type: ignore[no-untyped-call, unused-ignore]
                **common,
            )
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            from stockctl.errors import CacheUnavailable

            text = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CacheUnavailable(f"redis unavailable at {target.masked()}: {text}") from None
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        if target.sentinel_password:
            sentinel_kwargs["password"] = target.sentinel_password
        if target.sentinel_username:
            sentinel_kwargs["username"] = target.sentinel_username
        if fail_fast:
            sentinel_kwargs["retry"] = options["retry"]
        # redis-py 8.2 types these; older releases do not (the dependency allows >= 5.0)
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.nodes), sentinel_kwargs=sentinel_kwargs
        )
        assert target.master is not None
        return sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            target.master,
            connection_pool_class=_following_pool(),
            db=target.db,
            health_check_interval=30,
            **common,
        )
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=target.db, health_check_interval=30, **common)


# How often a sentinel pool asks the sentinels which server is master (see _following_pool).
SENTINEL_RECHECK_SECONDS = 1.0


@functools.cache
def _following_pool() -> type:
    """redis-py's sentinel pool asks the sentinels for the master only when it opens a
    connection, and drops a connection only when its server refuses as a replica. After
    ``SENTINEL FAILOVER`` the old master goes on answering as a master until the sentinels
    reconfigure it (about 10 s): a busy client keeps its connections to it, and every write
    it makes meanwhile is lost when that server becomes a replica. This pool asks again at
    most every ``SENTINEL_RECHECK_SECONDS`` as it hands out a connection; once the sentinels
    name another master, idle connections close and busy ones are dropped when released."""
    import threading
    import time

    import redis
    from redis.sentinel import SentinelConnectionPool

    class FollowingPool(SentinelConnectionPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
            self._asked = time.monotonic()
            self._asking = threading.Lock()

        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            if now - self._asked >= SENTINEL_RECHECK_SECONDS and self._asking.acquire(False):
                try:
                    self._asked = now  # on a change it closes the idle connections:
                    self.get_master_address()  # type: ignore[no-untyped-call, unused-ignore]
                except redis.ConnectionError:
                    pass  # no master named now: the connection's own connect says so
                finally:
                    self._asking.release()
            return super().get_connection(*args, **kwargs)

    return FollowingPool


def answering_node(client: Any, target: RedisTarget) -> str:
    """The node that answers for the target now: ``host:port`` of the standalone server or
    the sentinels' current master; for a cluster, its masters."""
    if target.kind == "cluster":
        masters = sorted(f"{n.host}:{n.port}" for n in client.get_primaries())
        return ",".join(masters)
    if target.kind == "sentinel":
        host, port = client.connection_pool.get_master_address()
        return f"{host}:{port}"
    host, port = target.nodes[0]
    return f"{host}:{port}"
