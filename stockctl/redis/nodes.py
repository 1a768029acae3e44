"""Which Redis answers for which keys, and retrying a batch across a reshard or a failover.

On standalone and sentinel there is one node: the client itself. On a Redis Cluster, work on
many products is split by the master of each product's slot (every key of a product shares its
slot: ``{product}`` hash tags), so a batch costs one round trip per node, not one per product.
When a node refuses a group (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a script's "non local key", a
demoted master's READONLY) or cannot be reached, the slot map is refreshed and only that group
is tried again, with a growing pause. Every cache write is version-guarded, so a group applied
twice (its reply lost) is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from stockctl.errors import CacheUnavailable

log = logging.getLogger("stockctl.redis")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

# A script given this shebang may touch keys of many slots that the node it runs on serves
# (Redis 7). Standalone Redis keeps the plain script (Redis 6.2 has no shebangs).
CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"
CROSS_SLOT_READ = "#!lua flags=allow-cross-slot-keys,no-writes\n"

_RETRYABLE_REPLIES = (
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
)
_RETRYABLE_TEXT = ("non local key", "cluster is down", "not hash to the same slot")
_RETRYABLE_CLASSES = (
    redis.exceptions.AskError,  # MovedError too
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
)
RETRY_PAUSES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.75, 1.0, 1.0)  # ~4.4 s in all


def retryable(exc: BaseException) -> bool:
    """A refusal that a fresh slot map or a moment's wait cures."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.exceptions.ClusterError):
        return True
    if isinstance(exc, redis.exceptions.RedisClusterException):
        return True
    # redis-py parses MOVED, ASK, TRYAGAIN and READONLY replies into these classes, their
    # first word cut off (and a pipeline prefixes "Command # n (...) of pipeline caused error")
    if isinstance(exc, _RETRYABLE_CLASSES):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        return text.split(" ", 1)[0] in _RETRYABLE_REPLIES or any(
            t in text for t in _RETRYABLE_TEXT
        )
    return False


class Script:
    """A Lua script run on one node by its SHA, loaded there on a NOSCRIPT reply (after a
    failover the new master's script cache is empty)."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    def __call__(self, node: Any, args: Sequence[Any]) -> Any:
        try:
            return node.evalsha(self.sha, 0, *args)
        except NoScriptError:
            node.script_load(self.body)
            return node.evalsha(self.sha, 0, *args)


class NodeRouter:
    def __init__(self, client: Any, target: str) -> None:
        self.client = client
        self.target = target
        self.cluster = isinstance(client, RedisCluster)

    def nodes(self) -> list[Any]:
        """A client per master (one on standalone and sentinel)."""
        if not self.cluster:
            return [self.client]
        return [self.client.get_redis_connection(n) for n in self.client.get_primaries()]

    def group(self, items: Sequence[I], slot_key: Callable[[I], str]) -> list[tuple[Any, list[I]]]:
        """Items split by the node serving ``slot_key(item)``, in their order within a node."""
        if not self.cluster:
            return [(self.client, list(items))] if items else []
        client = self.client
        manager = client.nodes_manager
        by_node: dict[str, tuple[Any, list[I]]] = {}
        slots: dict[str, Any] = {}
        for item in items:
            key = slot_key(item)
            node = slots.get(key)
            if node is None:
                node = slots[key] = manager.get_node_from_slot(client.keyslot(key))
            entry = by_node.get(node.name)
            if entry is None:
                entry = by_node[node.name] = (client.get_redis_connection(node), [])
            entry[1].append(item)
        return list(by_node.values())

    def refresh(self) -> None:
        if self.cluster:
            try:
                self.client.nodes_manager.initialize()
            except Exception as exc:  # every seed down: the next attempt says so
                log.debug("slot map refresh failed: %s", exc)

    def each(
        self,
        items: Sequence[I],
        slot_key: Callable[[I], str],
        work: Callable[[Any, list[I]], T],
    ) -> list[tuple[list[I], T]]:
        """``work(node, items_of_that_node)`` for every node, retrying refused groups on a
        fresh slot map; ``CacheUnavailable`` once the pauses are used up."""
        todo = list(items)
        done: list[tuple[list[I], T]] = []
        last: BaseException | None = None
        for pause in (0.0, *RETRY_PAUSES):
            if pause:
                time.sleep(pause)
                self.refresh()
            failed: list[I] = []
            for node, group in self.group(todo, slot_key):
                try:
                    done.append((group, work(node, group)))
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    last = exc
                    failed += group
            if not failed:
                return done
            todo = failed
            if not self.cluster and isinstance(last, redis.ConnectionError | redis.TimeoutError):
                break  # one node, unreachable: nothing to re-route; say so now
        raise CacheUnavailable(f"redis unavailable at {self.target}: {_first_line(last)}")


def _first_line(exc: BaseException | None) -> str:
    return str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
