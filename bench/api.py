"""HTTP API benchmark: a real ``stockctl serve`` on PostgreSQL + Redis under a load generator.

One run, on a fresh PostgreSQL database (dropped afterwards, even on failure): ``stockctl init``,
``stockctl seed --products 10000 --warehouses 20`` (200,000 inventory rows), every product warmed
into Redis (the bench Redis, a cache prefix of this run's own, deleted at the end). Then
``stockctl serve`` (one process by default, as shipped: access log on) is measured, each phase
``--seconds`` long after a short untimed warm-up:

- ``GET /health`` at ``--connections`` connections: the framework's own ceiling on this machine;
- the stock check ``GET /v1/inventory?product_id=&warehouse_id=`` (a random row of the 200,000
  each request, read from PostgreSQL) at the same concurrency: requests/s (ratio to /health,
  goal >= 0.3) and p50/p99. The two run in halves, /health, stock, stock, /health, so that a
  drift in the machine's load weighs on both alike (percentiles: the worse half);
- bulk stock ``POST /v1/batch/stock`` with 1000 distinct random product ids (from the warm
  cache): on one connection, latency p50/p95/p99 (goal p95 <= 50 ms: one request's own cost,
  no queueing), and requests/s at ``--connections``.

Load generator: ``wrk`` when it is on PATH (Debian package wrk; this script installs nothing),
else a Python asyncio HTTP/1.1 keep-alive client in this process (much lighter than an HTTP
library, yet it competes with the server for the same CPU: the rates it reports are lower
bounds). The generator used and the load average are reported with the figures. Every response
must be 2xx, or the script exits 1.

Usage: bench/api.py [--json] [--seconds N] [--connections C] [--workers W]
                    [--generator auto|wrk|python]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import REDIS_URL, STOCKCTL, Figure, emit, fresh_pg_database, log, parser, stockctl

PRODUCTS = 10_000
WAREHOUSES = 20
BULK_IDS = 1000
BODIES = 64  # distinct bulk bodies, cycled
TOKEN = "bench-" + uuid.uuid4().hex  # a read token of this run's own
WARMUP_SECONDS = 2.0


def pid(n: int) -> str:
    return f"P{n:06d}"


def wid(n: int) -> str:
    return f"WH{n:03d}"


def bulk_bodies(seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [
        json.dumps(
            {"product_ids": [pid(n) for n in rng.sample(range(1, PRODUCTS + 1), BULK_IDS)]},
            separators=(",", ":"),
        )
        for _ in range(BODIES)
    ]


# --------------------------------------------------------------------------- setup


def prepare(url: str, prefix: str) -> None:
    from stockctl.bootstrap import bootstrap
    from stockctl.core import cache
    from stockctl.settings import load_settings

    log(f"init + seed {PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
    stockctl("init", database_url=url)
    stockctl("seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES), database_url=url)
    app = bootstrap(
        load_settings(
            database_url=url, redis_url=REDIS_URL, cache_prefix=prefix, cache_ttl_seconds=0
        )
    )
    try:
        warmed = cache.warm(app.store, app.cache())
    finally:
        app.close()
    log(f"warmed {warmed.products:,} products ({warmed.rows:,} rows) in {warmed.seconds:.1f} s")


def cleanup_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"{prefix}:*", f"stockctl:{prefix}:*"):
            batch = list(client.scan_iter(pattern, 5000))
            for i in range(0, len(batch), 1000):
                client.delete(*batch[i : i + 1000])
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(url: str, prefix: str, workers: int) -> Iterator[tuple[str, int]]:
    """``stockctl serve`` on a free port; yields (host, port); SIGTERM at the end."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        STOCKCTL_DATABASE_URL=url,
        STOCKCTL_REDIS_URL=REDIS_URL,
        STOCKCTL_CACHE_PREFIX=prefix,
        STOCKCTL_CACHE_TTL_SECONDS="0",
        STOCKCTL_API_TOKENS=json.dumps([{"name": "bench", "token": TOKEN, "scopes": ["read"]}]),
    )
    errlog = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [STOCKCTL, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,  # the access log: written, not kept
        stderr=errlog,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                errlog.seek(0)
                raise SystemExit(
                    f"stockctl serve exited {proc.returncode}: {errlog.read()[-2000:]}"
                )
            with suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("stockctl serve did not answer /health within 60 s")
            time.sleep(0.2)
        log(f"stockctl serve (workers={workers}) up on 127.0.0.1:{port}")
        yield "127.0.0.1", port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        errlog.close()


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bad: int  # non-2xx responses and socket errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Workload:
    """What one phase sends: GETs of ``path_of(i)``, or POSTs of ``bodies`` to ``path``."""

    name: str
    path: str
    random_rows: bool = False  # the stock check: a random (product, warehouse) per request
    bodies: Sequence[str] = ()
    auth: bool = True


def stock_path(rng: random.Random) -> str:
    return (
        f"/v1/inventory?product_id={pid(rng.randint(1, PRODUCTS))}"
        f"&warehouse_id={wid(rng.randint(1, WAREHOUSES))}"
    )


# wrk: a Lua script per phase; `done` prints one machine-readable line
_LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _lua(w: Workload) -> str:
    lines = ["math.randomseed(7)"]
    if w.auth:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {TOKEN}"')
    if w.bodies:
        lines.append('wrk.method = "POST"')
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append("local bodies = {")
        lines.extend(f"  [==[{b}]==]," for b in w.bodies)
        lines.append("}")
        lines.append("local n = 0")
        lines.append(
            "request = function() n = n + 1; "
            f'return wrk.format(nil, "{w.path}", nil, bodies[(n % #bodies) + 1]) end'
        )
    elif w.random_rows:
        lines.append(
            "request = function() return wrk.format(nil, string.format("
            '"/v1/inventory?product_id=P%06d&warehouse_id=WH%03d", '
            f"math.random(1, {PRODUCTS}), math.random(1, {WAREHOUSES}))) end"
        )
    else:
        lines.append(f'wrk.path = "{w.path}"')
    return "\n".join(lines) + "\n" + _LUA_DONE


def run_wrk(host: str, port: int, w: Workload, connections: int, seconds: float) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua(w))
        script = f.name
    try:
        threads = max(1, min(2, connections))
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            script,
            f"http://{host}:{port}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        Path(script).unlink()
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    n, micros, p50, p95, p99, bad = (int(x) for x in line.split()[1:])
    return Result(n, micros / 1e6, p50 / 1000, p95 / 1000, p99 / 1000, bad)


async def _client(
    host: str,
    port: int,
    make: Callable[[], bytes],
    deadline: float,
    latencies: list[float],
    bad: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            request = make()
            started = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split(b" ", 2)[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    raise SystemExit("chunked responses are not supported by the Python client")
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                bad[0] += 1
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


def _maker(host: str, port: int, w: Workload) -> Callable[[], bytes]:
    rng = random.Random(7)
    auth = f"Authorization: Bearer {TOKEN}\r\n" if w.auth else ""
    head = f"Host: {host}:{port}\r\n{auth}"
    if w.bodies:
        encoded = [b.encode() for b in w.bodies]
        counter = iter(range(1 << 62))

        def post() -> bytes:
            body = encoded[next(counter) % len(encoded)]
            return (
                f"POST {w.path} HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        return post

    def get() -> bytes:
        path = stock_path(rng) if w.random_rows else w.path
        return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()

    return get


def run_python(host: str, port: int, w: Workload, connections: int, seconds: float) -> Result:
    latencies: list[float] = []
    bad = [0]

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        make = _maker(host, port, w)
        await asyncio.gather(
            *(_client(host, port, make, deadline, latencies, bad) for _ in range(connections))
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return Result(len(ordered), elapsed, pct(0.50), pct(0.95), pct(0.99), bad[0])


def measure(
    generator: str, host: str, port: int, w: Workload, connections: int, seconds: float
) -> Result:
    run = run_wrk if generator == "wrk" else run_python
    run(host, port, w, connections, WARMUP_SECONDS)  # untimed: connections, pools, caches
    result = run(host, port, w, connections, seconds)
    log(
        f"{w.name} (c={connections}): {result.rate:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p95 {result.p95_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, bad {result.bad}"
    )
    if result.bad:
        raise SystemExit(f"{w.name}: {result.bad} responses were not 2xx (or failed)")
    if result.requests == 0:
        raise SystemExit(f"{w.name}: no request completed")
    return result


def combine(a: Result, b: Result) -> Result:
    """Two halves of one phase: rates over the summed time; percentiles, the worse half."""
    return Result(
        a.requests + b.requests,
        a.seconds + b.seconds,
        max(a.p50_ms, b.p50_ms),
        max(a.p95_ms, b.p95_ms),
        max(a.p99_ms, b.p99_ms),
        a.bad + b.bad,
    )


def interleaved(
    generator: str, host: str, port: int, a: Workload, b: Workload, connections: int, seconds: float
) -> tuple[Result, Result]:
    """A, B, B, A in halves: a drift of the machine's load weighs on both alike."""
    half = seconds / 2
    a1 = measure(generator, host, port, a, connections, half)
    b1 = measure(generator, host, port, b, connections, half)
    b2 = measure(generator, host, port, b, connections, half)
    a2 = measure(generator, host, port, a, connections, half)
    return combine(a1, a2), combine(b1, b2)


def check_answers(host: str, port: int, bodies: Sequence[str]) -> None:
    """The routes answer what the benchmark assumes, before it measures them."""
    import httpx

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://{host}:{port}", headers=auth, timeout=30) as c:
        r = c.get("/v1/inventory", params={"product_id": pid(1), "warehouse_id": wid(1)})
        if r.status_code != 200 or "sellable" not in r.json():
            raise SystemExit(f"stock check answered {r.status_code}: {r.text[:200]}")
        r = c.post(
            "/v1/batch/stock", content=bodies[0], headers={"content-type": "application/json"}
        )
        body = r.json() if r.status_code == 200 else {}
        if len(body.get("stocks", {})) != BULK_IDS or body.get("missing"):
            raise SystemExit(f"bulk stock answered {r.status_code}: {r.text[:200]}")


# --------------------------------------------------------------------------- main


def figures(
    health: Result, stock: Result, bulk1: Result, bulkc: Result, args: Any, note: str
) -> list[Figure]:
    c = args.connections
    ratio = stock.rate / health.rate if health.rate else None
    return [
        Figure(f"API GET /health, c={c} (framework ceiling)", health.rate, "req/s", note=note),
        Figure(
            f"API stock check GET /v1/inventory, c={c}",
            stock.rate,
            "req/s",
            raw=health.rate,
            ratio=ratio,
            goal=">= 0.3x /health",
        ),
        Figure(f"API stock check p50, c={c}", stock.p50_ms, "ms"),
        Figure(f"API stock check p99, c={c}", stock.p99_ms, "ms"),
        Figure("API bulk stock 1000 ids p95, c=1", bulk1.p95_ms, "ms", goal="<= 50 ms"),
        Figure("API bulk stock 1000 ids p50, c=1", bulk1.p50_ms, "ms"),
        Figure("API bulk stock 1000 ids p99, c=1", bulk1.p99_ms, "ms"),
        Figure("API bulk stock 1000 ids, c=1", bulk1.rate, "req/s"),
        Figure(f"API bulk stock 1000 ids, c={c}", bulkc.rate, "req/s"),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--connections", type=int, default=32, help="concurrency of the rate phases")
    p.add_argument("--workers", type=int, default=1, help="stockctl serve --workers")
    p.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = p.parse_args()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    elif generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not on PATH (Debian package wrk)")
    log(f"load generator: {generator}")

    prefix = f"benchapi{uuid.uuid4().hex[:8]}"
    bodies = bulk_bodies()
    load_before = os.getloadavg()[0]
    try:
        with fresh_pg_database("stockctl_bench_api") as url:
            prepare(url, prefix)
            with serving(url, prefix, args.workers) as (host, port):
                check_answers(host, port, bodies)
                c, s = args.connections, args.seconds
                health, stock = interleaved(
                    generator,
                    host,
                    port,
                    Workload("/health", "/health", auth=False),
                    Workload("stock check", "", random_rows=True),
                    c,
                    s,
                )
                bulk = Workload("bulk stock", "/v1/batch/stock", bodies=bodies)
                bulk1 = measure(generator, host, port, bulk, 1, s)
                bulkc = measure(generator, host, port, bulk, c, s)
    finally:
        cleanup_redis(prefix)
    load_after = os.getloadavg()[0]
    note = (
        f"load generator {generator} on the same 2-core machine; stockctl serve --workers "
        f"{args.workers} (access log on), {args.seconds:.0f} s per phase; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (other work was running)"
    )
    emit(figures(health, stock, bulk1, bulkc, args, note), args.json)


if __name__ == "__main__":
    main()
