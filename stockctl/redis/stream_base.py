"""What the Redis Streams adapters share: the client type, the refusals worth retrying, and
reading entries and errors."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from stockctl.core.worker_ports import Delivery
from stockctl.errors import CacheUnavailable

Client = redis.Redis | RedisCluster

# Refusals that a moment's wait, a reconnect or a fresh slot map cures: a node that cannot be
# reached, a reshard (MOVED, ASK, TRYAGAIN) or a failover (CLUSTERDOWN, MASTERDOWN, a demoted
# master's READONLY, a replica still LOADING). redis-py already retried them a few times; we
# report them as CacheUnavailable, and the worker's job loop tries again with a growing pause.
TRANSIENT = (
    redis.ConnectionError,  # also BusyLoadingError and sentinel's MasterNotFoundError
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError, "TTL exhausted"
    redis.exceptions.RedisClusterException,  # SlotNotCoveredError, no reachable node
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,  # and MovedError, when the redirections ran out
    redis.exceptions.ReadOnlyError,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(fields: Any) -> dict[str, str]:
    """An entry's fields, decoded: from redis-py's dict, or as Redis sends them
    ([field, value, ...]; a Dapr entry has one, ``data``)."""
    if isinstance(fields, dict):
        return {_text(k): _text(v) for k, v in fields.items()}
    if len(fields) == 2:
        return {_text(fields[0]): _text(fields[1])}
    return {_text(k): _text(v) for k, v in zip(fields[0::2], fields[1::2], strict=True)}


def _deliveries(stream: Any, entries: Any) -> list[Delivery]:
    out = []
    for entry_id, fields in entries or []:
        if fields is None:  # trimmed away while pending
            continue
        out.append(Delivery(_text(stream), _text(entry_id), _fields(fields)))
    return out


def _guard(fn: Any, target: str) -> Any:
    try:
        return fn()
    except TRANSIENT as exc:
        raise CacheUnavailable(f"redis unavailable at {target}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The message's first line, without the client's repr that some carry (sentinel's
    MasterNotFoundError: "No master found for 'm' : <redis.client.Redis(...)>")."""
    text = str(exc).strip()
    line = text.splitlines()[0].split(" : <", 1)[0] if text else type(exc).__name__
    return line[:300]


def _nogroup(exc: BaseException) -> bool:
    """The group is gone: NOGROUP, or (Redis 7) a blocked read's stream was deleted under it."""
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and ("NOGROUP" in text or "UNBLOCKED" in text)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
