"""Cache benchmark: warm 200,000 inventory rows from PostgreSQL into Redis, and read stock of
1,000 products from the warm cache, each against a raw limit measured in the same run.

One run, on a fresh PostgreSQL database (dropped afterwards, even on failure): ``init``,
``stockctl seed --products 10000 --warehouses 20`` (200,000 rows), VACUUM ANALYZE. Redis: a
logical database of this benchmark's own (``STOCKCTL_BENCH_CACHE_REDIS_URL``, default
``redis://127.0.0.1:6379/10``: not the tests' 14/15, not bench/events.py's 12), FLUSHDB before
every phase and at the end — never point it at a database something else uses.

- warm: ``stockctl.core.warming.warm`` (what ``stockctl warm-cache`` runs: server-side cursor
  ordered by product, 1,000 products per version-guarded FILL script call), ``--runs`` times
  (default 3) on an empty Redis; the median wall time, goal <= 5 s. After the last run the cache
  is checked: the number of keys, and ``verify`` of 500 random products reports no drift.
- raw limits, same run, same Redis, same number of plain keys (200,000 warehouse keys + 5 per
  product = 250,000): (a) redis-py, ``pipeline(transaction=False).set(key, value, ex=300)`` sent
  in pipelines of 10,000 (the fastest way for Python to write plain keys one by one; run before
  and after the warm runs, the better one counts), and (b)
  ``redis-benchmark -n 250000 -P 1000 -t set -q`` (Debian redis-tools; skipped if absent): the
  server's own SET ceiling with no Python at all. ratio = raw time / warm time.
- read: ``stockctl.core.cache.get_stock`` for 1,000 random products (a fresh sample each call)
  from the warm cache, ``--calls`` times (default 200) after 10 untimed calls; p50/p95/p99 in ms
  (goal p95 <= 10 ms; every read must be a hit). Raw: one redis-py ``MGET`` of the same 1,000
  ``catalog:product:{p}`` details (what get_stock reads, without decoding, checking or
  counting), p95 over the same samples; and, for reference in the note, one ``MGET`` of the same
  products' plain ``:available`` keys.

The machine is shared (2 cores; other people's tests may be running): the load average at the
start and the end of each phase is reported with the figures.

Usage: bench/cache.py [--json] [--runs N] [--calls N]
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from _common import Figure, emit, fresh_pg_database, log, median, parser, stockctl

PRODUCTS = 10_000
WAREHOUSES = 20
ROWS = PRODUCTS * WAREHOUSES
PLAIN_KEYS = ROWS + 5 * PRODUCTS  # warehouse keys + total, available, status, low_stock, product
READ_PRODUCTS = 1000
REDIS_URL = os.environ.get("STOCKCTL_BENCH_CACHE_REDIS_URL", "redis://127.0.0.1:6379/10")
PREFIX = "catalog"
TTL = 300


def pid(n: int) -> str:
    return f"P{n:06d}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- setup


def prepare(url: str) -> None:
    import psycopg

    import stockctl as lib

    log(f"init + seed {PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
    sc = lib.connect(url)
    try:
        sc.init()
    finally:
        sc.close()
    stockctl("seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES), database_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT count(*) FROM inventory").fetchone()
    if row is None or row[0] != ROWS:
        raise SystemExit(f"seed left {row} inventory rows, expected {ROWS}")


def redis_client() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=60)
    client.ping()
    return client


# --------------------------------------------------------------------------- phases


@dataclass
class Warm:
    seconds: list[float]
    keys: int
    drift: int
    load: str

    @property
    def median(self) -> float:
        return median(self.seconds)


def warm_phase(app: Any, client: Any, runs: int) -> Warm:
    from stockctl.core import cache as cache_uc
    from stockctl.core import warming

    seconds: list[float] = []
    before = load()
    for n in range(runs):
        client.flushdb()
        started = time.perf_counter()
        result = warming.warm(app.store, app.cache(), batch=1000)
        seconds.append(time.perf_counter() - started)
        if (result.products, result.rows) != (PRODUCTS, ROWS):
            raise SystemExit(f"warm wrote {result.products} products / {result.rows} rows")
        log(f"warm run {n + 1}: {seconds[-1]:.2f} s ({ROWS / seconds[-1]:,.0f} rows/s)")
    keys = int(client.dbsize())
    sample = random.Random(7).sample([pid(n) for n in range(1, PRODUCTS + 1)], 500)
    cache = app.cache()
    drift = cache_uc.verify(app.store, cache, cache.keys, sample)
    if drift:
        raise SystemExit(f"warm left drift: {drift[:3]}")
    return Warm(seconds, keys, len(drift), f"{before} -> {load()}")


def raw_pipeline(client: Any) -> float:
    """redis-py, plain SETs with a TTL, pipelines of 10,000: the same keys warm writes."""
    client.flushdb()
    names = [
        *(
            f"raw:stock:{pid(p)}:warehouse:WH{w:03d}"
            for p in range(1, PRODUCTS + 1)
            for w in range(1, WAREHOUSES + 1)
        ),
        *(
            f"raw:stock:{pid(p)}:{suffix}"
            for p in range(1, PRODUCTS + 1)
            for suffix in ("total", "available", "status", "low_stock", "product")
        ),
    ]
    assert len(names) == PLAIN_KEYS
    started = time.perf_counter()
    for start in range(0, len(names), 10_000):
        pipe = client.pipeline(transaction=False)
        for name in names[start : start + 10_000]:
            pipe.set(name, "123", ex=TTL)
        pipe.execute()
    elapsed = time.perf_counter() - started
    if int(client.dbsize()) != PLAIN_KEYS:
        raise SystemExit("the raw pipeline did not write every key")
    client.flushdb()
    return elapsed


def raw_redis_benchmark() -> float | None:
    """Seconds for redis-benchmark to SET PLAIN_KEYS keys 1,000 per pipeline; None if absent."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    from urllib.parse import urlsplit

    url = urlsplit(REDIS_URL)
    db = (url.path or "/0").lstrip("/") or "0"
    cmd = [tool, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
    cmd += ["--dbnum", db, "-n", str(PLAIN_KEYS), "-P", "1000", "-r", str(PLAIN_KEYS)]
    cmd += ["-t", "set", "-q"]
    if url.password:
        cmd += ["-a", url.password]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    # progress lines ("SET: rps=...") then "SET: 1234567.89 requests per second, p50=..."
    lines = out.replace("\r", "\n").splitlines()
    line = next(x.strip() for x in reversed(lines) if "requests per second" in x)
    rate = float(line.split()[1])
    return PLAIN_KEYS / rate


@dataclass
class Reads:
    ms: list[float]
    raw_ms: list[float]
    plain_ms: list[float]
    hits: int
    misses: int
    load: str


def read_phase(app: Any, client: Any, calls: int) -> Reads:
    from stockctl.core import cache as cache_uc
    from stockctl.core.cache import ReadCounters

    rng = random.Random(3)
    everyone = [pid(n) for n in range(1, PRODUCTS + 1)]
    samples = [rng.sample(everyone, READ_PRODUCTS) for _ in range(calls + 10)]
    cache, store = app.cache(), app.store
    counters = ReadCounters()
    keys = cache.keys
    before = load()
    ms: list[float] = []
    raw_ms: list[float] = []
    plain_ms: list[float] = []
    for n, ids in enumerate(samples):
        warm_up = n < 10
        started = time.perf_counter()
        found = cache_uc.get_stock(store, cache, ids, None if warm_up else counters)
        took = (time.perf_counter() - started) * 1000
        if any(v is None for v in found.values()):
            raise SystemExit("get_stock found no stock for a seeded product")
        started = time.perf_counter()
        raw = client.mget([keys.product(p) for p in ids])
        raw_took = (time.perf_counter() - started) * 1000
        if not all(raw):
            raise SystemExit("a product detail is missing from the warm cache")
        started = time.perf_counter()
        plain = client.mget([keys.available(p) for p in ids])
        plain_took = (time.perf_counter() - started) * 1000
        if not all(plain):
            raise SystemExit("an available key is missing from the warm cache")
        if not warm_up:
            ms.append(took)
            raw_ms.append(raw_took)
            plain_ms.append(plain_took)
    return Reads(ms, raw_ms, plain_ms, counters.hits, counters.misses, f"{before} -> {load()}")


# --------------------------------------------------------------------------- report


def figures(warm: Warm, pipeline_s: float, bench_s: float | None, reads: Reads) -> list[Figure]:
    spread = ", ".join(f"{s:.2f}" for s in warm.seconds)
    common = (
        f"median of {len(warm.seconds)} runs ({spread} s), each into an empty Redis; "
        f"{warm.keys:,} keys after; verify of 500 random products: {warm.drift} drift; "
        f"load average (1/5 min) {warm.load}"
    )
    out = [
        Figure(
            f"warm-cache {ROWS:,} rows ({PRODUCTS:,} products x {WAREHOUSES} warehouses), "
            "PostgreSQL -> Redis, vs redis-py pipelined SET",
            round(warm.median, 3),
            "s",
            raw=round(pipeline_s, 3),
            ratio=round(pipeline_s / warm.median, 2),
            goal="<= 5 s",
            note=f"{common}; raw = {PLAIN_KEYS:,} plain SET ... EX {TTL} from redis-py in "
            "pipelines of 10,000 (the same number of plain keys, no database, no versions), "
            "the better of a run before and a run after the warm runs",
        ),
        Figure(
            "warm-cache throughput",
            round(ROWS / warm.median),
            "rows/s",
            raw=round(ROWS / pipeline_s),
            ratio=round(pipeline_s / warm.median, 2),
            goal=f">= {ROWS // 5:,} rows/s",
        ),
    ]
    if bench_s is not None:
        out.append(
            Figure(
                "warm-cache 200,000 rows vs redis-benchmark SET -P 1000",
                round(warm.median, 3),
                "s",
                raw=round(bench_s, 3),
                ratio=round(bench_s / warm.median, 2),
                goal="<= 5 s",
                note=f"raw = redis-benchmark -n {PLAIN_KEYS} -P 1000 -r {PLAIN_KEYS} -t set "
                "against the same server: its SET ceiling, with no client library",
            )
        )
    p95, raw95 = percentile(reads.ms, 95), percentile(reads.raw_ms, 95)
    out.append(
        Figure(
            f"get_stock {READ_PRODUCTS:,} products from the warm cache, p95",
            round(p95, 2),
            "ms",
            raw=round(raw95, 2),
            ratio=round(raw95 / p95, 2),
            goal="<= 10 ms",
            note=f"{len(reads.ms)} calls, a fresh random sample of {READ_PRODUCTS:,} each; "
            f"p50 {percentile(reads.ms, 50):.2f} ms, p99 {percentile(reads.ms, 99):.2f} ms, "
            f"mean {statistics.fmean(reads.ms):.2f} ms; {reads.hits:,} hits, {reads.misses} "
            f"misses; raw = one redis-py MGET of the same {READ_PRODUCTS:,} product details, "
            f"not decoded (p50 {percentile(reads.raw_ms, 50):.2f} ms); for reference, one MGET "
            f"of the "
            f"same products' plain :available keys: p95 {percentile(reads.plain_ms, 95):.2f} ms; "
            f"load average {reads.load}",
        )
    )
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="warm runs (median reported)")
    p.add_argument("--calls", type=int, default=200, help="timed get_stock calls")
    args = p.parse_args()

    from stockctl.bootstrap import bootstrap
    from stockctl.settings import load_settings

    client = redis_client()
    log(f"Redis {REDIS_URL} (flushed before each phase and at the end); load {load()}")
    try:
        with fresh_pg_database("stockctl_bench_cache") as url:
            prepare(url)
            settings = load_settings(
                database_url=url, redis_url=REDIS_URL, cache_prefix=PREFIX, cache_ttl_seconds=TTL
            )
            app = bootstrap(settings)
            try:
                raw = [raw_pipeline(client)]
                log(f"raw redis-py pipelined SET x {PLAIN_KEYS:,}: {raw[-1]:.2f} s")
                bench_s = raw_redis_benchmark()
                client.flushdb()
                if bench_s is not None:
                    log(f"raw redis-benchmark SET x {PLAIN_KEYS:,} -P 1000: {bench_s:.2f} s")
                warm = warm_phase(app, client, args.runs)
                reads = read_phase(app, client, args.calls)
                raw.append(raw_pipeline(client))  # again after: load drift weighs on both
                log(f"raw redis-py pipelined SET x {PLAIN_KEYS:,}: {raw[-1]:.2f} s")
                pipeline_s = min(raw)
                log(f"get_stock p95 {percentile(reads.ms, 95):.2f} ms")
            finally:
                app.close()
    finally:
        client.flushdb()
        client.close()
    emit(figures(warm, pipeline_s, bench_s, reads), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
