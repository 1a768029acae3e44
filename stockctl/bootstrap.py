"""One place that wires adapters from settings. Nothing is created at import time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stockctl.core.cache import ReadCounters
from stockctl.core.cache_ports import CacheReads, StockCache
from stockctl.core.context import Context
from stockctl.core.hot_rows import HotRows
from stockctl.core.worker_ports import EventConsumer, InTransactionCache
from stockctl.settings import Settings
from stockctl.store.engine import create_store_engine
from stockctl.store.sql import SqlStore

# How long ``stockctl health`` and ``worker --check`` wait for Redis (see ``App.probe_cache``).
PROBE_TIMEOUT_SECONDS = 1.0

if TYPE_CHECKING:
    import redis

    from stockctl.clients.warehouse import WarehouseClient
    from stockctl.daemons.metrics import Metrics
    from stockctl.redis.bus import StreamPublisher
    from stockctl.redis.stream_admin import StreamAdmin, StreamTail
    from stockctl.redis.topology import RedisTarget


@dataclass
class App:
    settings: Settings
    store: SqlStore
    ctx: Context
    _redis: Any = field(default=None, repr=False)
    _cache: StockCache | None = field(default=None, repr=False)
    _metrics: Metrics | None = field(default=None, repr=False)
    read_counters: ReadCounters = field(default_factory=ReadCounters)
    _fast: dict[str, Any] = field(default_factory=dict, repr=False)  # fail-fast clients, caches

    def metrics(self) -> Metrics:
        if self._metrics is None:
            from stockctl.daemons.metrics import Metrics

            self._metrics = Metrics()
            self._metrics.watch_engine(self.store.engine, self.settings.db_pool_max_open)
            self._metrics.queue_capacity.set(self.settings.worker_queue_size)
            self.read_counters.listener = self._metrics.count_reads
            if self.ctx.hot_rows is not None:
                self.ctx.hot_rows.listener = self._metrics.record_merge
        return self._metrics

    @property
    def uses_redis(self) -> bool:
        return self.settings.redis_url is not None

    @property
    def redis_target(self) -> str:
        return self.redis_topology.masked() if self.uses_redis else "-"

    @property
    def redis_topology(self) -> RedisTarget:
        """Where Redis is and how it is laid out (standalone, cluster, sentinel)."""
        from stockctl.redis.topology import parse_redis_url

        url = self.settings.redis_url
        if url is None:
            from stockctl.errors import InvalidInput

            raise InvalidInput("no Redis configured: set STOCKCTL_REDIS_URL or --redis-url")
        return parse_redis_url(url.get_secret_value())

    def redis_description(self) -> str:
        """The topology and the node that answers now, e.g. ``sentinel mymaster: master
        10.0.0.7:6379`` (asks the sentinels or the cluster; raises ``CacheUnavailable``)."""
        from stockctl.errors import CacheUnavailable
        from stockctl.redis.topology import answering_node

        target = self.redis_topology
        try:
            node = answering_node(self.redis(), target)
        except Exception as exc:
            raise CacheUnavailable(f"redis unavailable at {self.redis_target}: {exc}") from None
        if target.kind == "cluster":
            return f"cluster: masters {node}"
        if target.kind == "sentinel":
            return f"sentinel {target.master}: master {node} (db {target.db})"
        return f"standalone: {node} (db {target.db})"

    def redis(self) -> Any:
        """The shared Redis client (connection pool; a ``RedisCluster`` on a cluster), made on
        first use."""
        if self._redis is None:
            from stockctl.redis.topology import connect

            self._redis = connect(self.redis_topology, self.settings.redis_timeout_seconds)
        return self._redis

    def read_cache(self) -> CacheReads:
        """The cache as the read path uses it (``get_stock``, ``bulk_sellable``, readiness).
        On Redis: a client of its own that gives up after ``cache_read_timeout_ms`` and never
        retries, behind a breaker (``cache_breaker_cooldown_seconds``), so that a stalled or
        lost Redis costs a read one short timeout, then nothing: reads go to the database
        until a probe finds Redis back. Embedded: the cache table itself."""
        if not self.uses_redis:
            return self.cache()
        if "reads" not in self._fast:
            from stockctl.core.guard import GuardedReads, ReadBreaker

            def changed(old: str, new: str) -> None:
                self.metrics().circuit_changed("cache")(old, new)

            breaker = ReadBreaker(self.settings.cache_breaker_cooldown_seconds, on_change=changed)
            timeout = self.settings.cache_read_timeout_ms / 1000
            self._fast["reads"] = GuardedReads(self._fast_cache(timeout), breaker)
        reads: CacheReads = self._fast["reads"]
        return reads

    def probe_cache(self) -> StockCache:
        """The cache for one-shot checks (``stockctl health``, ``worker --check``): on Redis,
        a client that gives up after ``PROBE_TIMEOUT_SECONDS`` (or ``redis_timeout_seconds``
        if shorter) and never retries: a stalled Redis fails the check in a second."""
        if not self.uses_redis:
            return self.cache()
        return self._fast_cache(min(PROBE_TIMEOUT_SECONDS, self.settings.redis_timeout_seconds))

    def _fast_cache(self, timeout: float) -> StockCache:
        """A Redis cache on a fail-fast client with ``timeout``, made once per timeout."""
        name = f"cache:{timeout}"
        if name not in self._fast:
            from stockctl.redis.cache import RedisStockCache
            from stockctl.redis.topology import connect

            client = connect(self.redis_topology, timeout, fail_fast=True)
            self._fast[f"client:{timeout}"] = client
            main = self.cache()  # the same keys (hash tags on a cluster) and TTL
            self._fast[name] = RedisStockCache(
                client, main.keys, self.settings.cache_ttl_seconds, self.redis_target
            )
        cache: StockCache = self._fast[name]
        return cache

    def cache(self) -> StockCache:
        """Redis when configured, else the embedded table."""
        if self._cache is None:
            from stockctl.core.projection import CacheKeys

            # On a cluster every key of a product shares its slot: hash tags are on by themselves.
            tags = self.settings.cache_hash_tags or (
                self.uses_redis and self.redis_topology.cluster
            )
            keys = CacheKeys(self.settings.cache_prefix, tags)
            ttl = self.settings.cache_ttl_seconds
            if self.uses_redis:
                from stockctl.redis.cache import RedisStockCache

                self._cache = RedisStockCache(
                    self.redis(),
                    keys,
                    ttl,
                    self.redis_target,
                    self.settings.event_dedupe_ttl_seconds,
                    self.settings.event_dedupe_markers,
                )
            else:
                from stockctl.store.cache_sql import SqlStockCache

                self._cache = SqlStockCache(
                    self.store,
                    keys,
                    ttl,
                    self.ctx.clock,
                    self.settings.event_dedupe_ttl_seconds,
                    self.settings.event_dedupe_markers,
                )
        return self._cache

    def embedded_cache(self) -> InTransactionCache:
        """The embedded cache (no Redis), for the pipeline that writes it in the outbox's
        transaction."""
        from stockctl.store.cache_sql import SqlStockCache

        cache = self.cache()
        assert isinstance(cache, SqlStockCache)
        return cache

    def stream_publisher(self) -> StreamPublisher:
        """Publishes outbox rows to the event streams (``publish``) and names Redis's masters
        (``lineage``), for the relay."""
        from stockctl.redis.bus import StreamPublisher

        return StreamPublisher(self.redis(), self.settings.stream_maxlen, self.redis_target)

    def stream_consumers(self, names: Sequence[str]) -> list[EventConsumer]:
        """One consumer of the app's group per name, sharing one recovery of a lost group and
        one waiter. Their first read creates the groups (in the job loop: retried while Redis
        is down)."""
        from stockctl.core.catalog import TOPICS
        from stockctl.redis.bus import StreamConsumer, StreamGroup

        s, group = self.settings, StreamGroup()
        return [
            StreamConsumer(
                self.redis(), s.app_id, name, TOPICS, s.dead_letter_topic, self.redis_target, group
            )
            for name in names
        ]

    def stream_admin(self) -> StreamAdmin:
        """Lag, lengths and the dead-letter stream of the app's consumer group."""
        from stockctl.redis.stream_admin import StreamAdmin

        s = self.settings
        return StreamAdmin(self.redis(), s.app_id, s.dead_letter_topic, self.redis_target)

    def stream_tail(self, topics: Sequence[str]) -> StreamTail:
        """Reads the newest entries of ``topics`` and follows them (``events tail``)."""
        from stockctl.redis.stream_admin import StreamTail

        return StreamTail(self.redis(), topics, self.redis_target)

    @property
    def database_target(self) -> str:
        """Where the database is, without credentials: ``host:port/db`` or ``sqlite file X``."""
        from stockctl.store.engine import describe_target

        return describe_target(self.settings.database_url.get_secret_value())

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        for name, client in list(self._fast.items()):
            if name.startswith("client:"):
                client.close()
        self._fast.clear()
        self.store.close()


def build_client(
    settings: Settings,
    redis_client: redis.Redis | None = None,
    metrics: Metrics | None = None,
) -> WarehouseClient:
    """The warehouse API client from settings; with Redis, the circuit is shared by processes;
    with ``metrics``, its state changes are exported."""
    from stockctl.clients.breaker import Breaker
    from stockctl.clients.warehouse import ClientOptions, WarehouseClient
    from stockctl.errors import InvalidInput

    if settings.api_url is None:
        raise InvalidInput("no API URL: set STOCKCTL_API_URL or --api-url")
    storage = None
    if redis_client is not None:
        import pybreaker

        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis_client, namespace="stockctl-warehouse"
        )
    on_change = metrics.circuit_changed("warehouse") if metrics is not None else None
    breaker = Breaker(
        "warehouse",
        settings.breaker_fail_max,
        settings.breaker_reset_seconds,
        storage,
        on_change=on_change,
    )
    token = settings.api_token.get_secret_value() if settings.api_token else None
    options = ClientOptions(
        settings.api_url, token, settings.client_timeout_seconds, settings.client_retries
    )
    return WarehouseClient(options, breaker)


def build_store(settings: Settings) -> SqlStore:
    engine = create_store_engine(settings.database_url.get_secret_value(), settings)
    replica = None
    if settings.database_replica_url is not None:
        replica = create_store_engine(settings.database_replica_url.get_secret_value(), settings)
    return SqlStore(engine, replica)


def bootstrap(settings: Settings) -> App:
    store = build_store(settings)
    ctx = Context(
        store=store,
        source=settings.event_source,
        actor=settings.actor,
        reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        reservation_max_ttl=timedelta(seconds=settings.reservation_max_ttl_seconds),
        idempotency_window=timedelta(seconds=settings.idempotency_window_seconds),
        allocation_strategy=settings.allocation_strategy,
        hot_rows=_hot_rows(settings, store),
    )
    return App(settings=settings, store=store, ctx=ctx)


def _hot_rows(settings: Settings, store: SqlStore) -> HotRows[Any, Any] | None:
    """The merging coordinator, where merging is on and the store can merge (PostgreSQL)."""
    if not settings.reserve_merge or store.backend != "postgresql":
        return None
    from stockctl.core.reserve_merge import merger

    return merger(settings.reserve_merge_window_ms / 1000, settings.reserve_merge_max)
