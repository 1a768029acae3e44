"""HTTP API benchmark: a real ``stockctl serve`` on PostgreSQL + Redis under ``wrk``, beside the
framework's and the database's own ceilings measured in the same run (issue 18).

One run, on a fresh PostgreSQL database (dropped afterwards, even on failure): ``stockctl init``,
``stockctl seed --products 10000 --warehouses 20`` (200,000 inventory rows, every row's
quantity_available then raised to 1,000,000,000 so reserves never run dry), every product warmed
into Redis (the bench Redis, a cache prefix of this run's own, deleted at the end). Then, each
phase ``--seconds`` long after a short untimed warm-up, at ``--connections`` (32) unless said:

- the framework's ceiling: a bare FastAPI app answering a constant JSON object
  (bench/_bare_app.py), served by uvicorn with ``stockctl serve``'s settings (one process, the
  same protocol class, no access log of uvicorn's); interleaved with the stock check as
  bare, stock, stock, bare in halves so a drift in the machine's load weighs on both alike
  (rates over the summed time, percentiles the worse half);
- the stock check ``GET /v1/inventory?product_id=&warehouse_id=`` (a random row of the 200,000
  each request, read from PostgreSQL) on ``stockctl serve`` (one process, access log on): rate
  (goal >= 0.6 x the bare app), p50, p99 (goal <= 3 x p50), and on one connection p50 <= 1 ms,
  p99 <= 10 ms;
- pgbench running the stock check's single-row SELECT at the same concurrency (the database's
  ceiling for that read);
- bulk stock ``POST /v1/batch/stock``, 1,000 distinct random product ids (from the warm cache):
  on one connection p50/p95/p99 (goal p95 <= 5 ms), and the rate at ``--connections``;
- reserve ``POST /v1/inventory/reserve`` (1 unit of a random row) over HTTP against pgbench
  running the library's one-statement reserve (bench/reserve.py's script) at the same
  concurrency, in halves ordered HTTP, pgbench, pgbench, HTTP: goal >= 0.5 x pgbench; then the
  database is checked: 0 oversold units, no row whose quantity_reserved differs from its holds;
- ``--many`` (1,000) concurrent keep-alive connections of stock checks for ``--many-seconds``
  (30), twice: closed loop (each connection sends its next check on its answer: the latency is
  then connections / rate, so p99 <= 1 s needs ~1,000 checks/s) and paced (each connection one
  check every 1,000 / (0.5 x the rate at --connections) seconds on average, each wait drawn
  at random between 0 and twice that, the first one too: 1,000 clients holding their
  connections open with the server not saturated): 0 errors (socket errors, timeouts,
  non-2xx), p99 <= 1 s for each, and the serve process's memory (RSS) before, at its peak
  (sampled every 0.5 s) and after;
- the stock check on ``stockctl serve --workers 2`` (``--compare-workers``; 0 to skip), to show
  what more processes give on this machine.

CPU per request of the serve process (all its processes: user + system time over the phase,
divided by the requests answered) is printed for every stockctl phase beside the bare app's.
wrk is required (Debian package wrk; ``make bench`` installs it with scripts/bench_tools.sh);
the load average is reported with the figures: the machine may be shared. Every response must
be 2xx, or the script exits 1.

With --quick: 2 s phases and a 5 s many-run.

Usage: bench/api.py [--json] [--quick] [--seconds N] [--connections C] [--many N]
                    [--many-seconds S] [--compare-workers W]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
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
TOKEN = "bench-" + uuid.uuid4().hex  # a token of this run's own (scope reserve, implies read)
STOCK = 1_000_000_000
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
    from stockctl.core import warming
    from stockctl.settings import load_settings

    log(f"init + seed {PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
    stockctl("init", database_url=url)
    stockctl("seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES), database_url=url)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE inventory SET quantity_available = %s", (STOCK,))
        conn.execute("VACUUM ANALYZE")
    app = bootstrap(
        load_settings(
            database_url=url, redis_url=REDIS_URL, cache_prefix=prefix, cache_ttl_seconds=0
        )
    )
    try:
        warmed = warming.warm(app.store, app.cache())
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


class Server:
    """A server process group (``stockctl serve`` and its workers, or the bare app): its CPU
    time and memory, read from /proc."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, name: str) -> None:
        self.proc, self.host, self.port, self.name = proc, host, port, name

    def pids(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError, IndexError, ValueError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid:  # process group: serve's session
                        found.append(int(entry.name))
        return found

    def cpu_seconds(self) -> float:
        """User + system time of every process of the group (live ones), in seconds."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for n in self.pids():
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{n}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def rss_mb(self) -> float:
        total = 0
        for n in self.pids():
            with suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{n}/statm").read_text().split()[1])
        return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def _raise_nofile() -> None:
    from stockctl.commands.serve import _raise_open_files_limit

    _raise_open_files_limit()


@contextmanager
def server_process(cmd: list[str], env: dict[str, str], name: str) -> Iterator[Server]:
    """A server on a free port (``cmd`` gets ``--port N`` or the port as its last argument);
    yields it once /health (stockctl) or /bare answers; SIGTERM to the group at the end."""
    import httpx

    port = free_port()
    full = [*cmd, "--port", str(port)] if cmd[0] == STOCKCTL else [*cmd, str(port)]
    errlog = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        full,
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,  # the access log: written, not kept
        stderr=errlog,
        start_new_session=True,
    )
    probe = "/health" if cmd[0] == STOCKCTL else "/bare"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                errlog.seek(0)
                raise SystemExit(f"{name} exited {proc.returncode}: {errlog.read()[-2000:]}")
            with suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not answer {probe} within 60 s")
            time.sleep(0.2)
        log(f"{name} up on 127.0.0.1:{port}")
        yield Server(proc, "127.0.0.1", port, name)  # type: ignore[arg-type]
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        errlog.close()


def serving(url: str, prefix: str, workers: int) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        STOCKCTL_DATABASE_URL=url,
        STOCKCTL_REDIS_URL=REDIS_URL,
        STOCKCTL_CACHE_PREFIX=prefix,
        STOCKCTL_CACHE_TTL_SECONDS="0",
        STOCKCTL_API_TOKENS=json.dumps([{"name": "bench", "token": TOKEN, "scopes": ["reserve"]}]),
    )
    return server_process(
        [STOCKCTL, "serve", "--workers", str(workers)], env, f"stockctl serve --workers {workers}"
    )


def bare_app() -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    script = str(Path(__file__).resolve().parent / "_bare_app.py")
    return server_process([sys.executable, script], env, "bare FastAPI app")


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bad: int  # non-2xx responses and socket errors (connect, read, write, timeout)
    cpu_s: float = 0.0  # the server's CPU time over the phase

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """The server's CPU per request, in microseconds."""
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0


@dataclass
class Workload:
    """What one phase sends: GETs of ``path``, a random stock row, or POSTs of ``bodies``."""

    name: str
    path: str
    random_rows: bool = False  # the stock check: a random (product, warehouse) per request
    bodies: Sequence[str] = ()
    reserve: bool = False  # POST a reserve of 1 unit of a random row
    auth: bool = True
    delay_ms: int = 0  # each connection waits this long between its requests (0: back to back)


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
    lines = ["math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)"]
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
    elif w.reserve:
        lines.append('wrk.method = "POST"')
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(
            "request = function() return wrk.format(nil, "
            f'"{w.path}", nil, string.format('
            """'{"product_id":"P%06d","warehouse_id":"WH%03d","quantity":1}', """
            f"math.random(1, {PRODUCTS}), math.random(1, {WAREHOUSES}))) end"
        )
    elif w.random_rows:
        lines.append(
            "request = function() return wrk.format(nil, string.format("
            '"/v1/inventory?product_id=P%06d&warehouse_id=WH%03d", '
            f"math.random(1, {PRODUCTS}), math.random(1, {WAREHOUSES}))) end"
        )
    else:
        lines.append(f'wrk.path = "{w.path}"')
    if w.delay_ms:  # wrk delays each connection's first request too: random, so they spread
        lines.append(f"delay = function() return math.random(1, {2 * w.delay_ms}) end")
    return "\n".join(lines) + "\n" + _LUA_DONE


def run_wrk(
    server: Server,
    w: Workload,
    connections: int,
    seconds: float,
    watch: Callable[[], None] | None = None,
) -> Result:
    """wrk against the server; ``watch`` is called every 0.5 s while it runs."""
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
            f"http://{server.host}:{server.port}",
        ]
        cpu_before = server.cpu_seconds()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_raise_nofile
        )
        while watch is not None and proc.poll() is None:
            watch()
            time.sleep(0.5)
        out, err = proc.communicate()
        cpu = server.cpu_seconds() - cpu_before
    finally:
        Path(script).unlink()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}): {err or out}")
    n, micros, p50, p95, p99, bad = (int(x) for x in line.split()[1:])
    return Result(n, micros / 1e6, p50 / 1000, p95 / 1000, p99 / 1000, bad, cpu)


def measure(
    server: Server,
    w: Workload,
    connections: int,
    seconds: float,
    watch: Callable[[], None] | None = None,
    allow_bad: bool = False,
) -> Result:
    run_wrk(server, w, connections, WARMUP_SECONDS)  # untimed: connections, pools, caches
    result = run_wrk(server, w, connections, seconds, watch)
    log(
        f"{w.name} on {server.name} (c={connections}): {result.rate:,.0f} req/s, "
        f"p50 {result.p50_ms:.2f} ms, p95 {result.p95_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"CPU {result.cpu_us:,.0f} us/request, bad {result.bad}"
    )
    if result.bad and not allow_bad:
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
        a.cpu_s + b.cpu_s,
    )


def check_answers(server: Server, bodies: Sequence[str]) -> None:
    """The routes answer what the benchmark assumes, before it measures them."""
    import httpx

    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://{server.host}:{server.port}"
    with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
        r = c.get("/v1/inventory", params={"product_id": pid(1), "warehouse_id": wid(1)})
        if r.status_code != 200 or "sellable" not in r.json():
            raise SystemExit(f"stock check answered {r.status_code}: {r.text[:200]}")
        r = c.post(
            "/v1/batch/stock", content=bodies[0], headers={"content-type": "application/json"}
        )
        body = r.json() if r.status_code == 200 else {}
        if len(body.get("stocks", {})) != BULK_IDS or body.get("missing"):
            raise SystemExit(f"bulk stock answered {r.status_code}: {r.text[:200]}")


# --------------------------------------------------------------------------- pgbench


def pgbench_select(url: str, clients: int, seconds: float) -> Any:
    """pgbench -M prepared running the stock check's statement (bound by the store as two
    parameters; here the ids are built from random numbers like the guide's)."""
    from reserve import parse_pgbench

    from stockctl.store.tables import inventory

    columns = ", ".join(c.name for c in inventory.columns)
    script = (
        f"\\set p random(1, {PRODUCTS})\n\\set w random(1, {WAREHOUSES})\n"
        f"SELECT {columns} FROM inventory WHERE product_id = ('P' || lpad(:p::text, 6, '0')) "
        "AND warehouse_id = ('WH' || lpad(:w::text, 3, '0'));\n"
    )
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-") as tmp:
        path = Path(tmp) / "stock_check.sql"
        path.write_text(script, encoding="utf-8")
        cmd = ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(max(1, round(seconds)))]
        cmd += ["-M", "prepared", "-f", str(path), url]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"pgbench failed (exit {proc.returncode}): {proc.stderr[-800:]}")
    result = parse_pgbench(proc.stdout, "prepared")
    log(f"pgbench stock-check SELECT (c={clients}): {result.tps:,.0f} tps")
    return result


def pgbench_reserve(url: str, clients: int, seconds: float) -> Any:
    from reserve import pgbench

    result = pgbench(url, False, clients, max(1, round(seconds)))
    log(f"pgbench reserve (c={clients}): {result.tps:,.0f} tps, {result.failed} failed")
    return result


def stock_audit(url: str) -> tuple[int, int, int]:
    """Oversold units, rows whose quantity_reserved differs from their holds, reservations."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        oversold = conn.execute(
            "SELECT coalesce(sum(quantity_reserved - quantity_available), 0) FROM inventory"
            " WHERE quantity_reserved > quantity_available"
        ).fetchone()
        drift = conn.execute(
            "SELECT count(*) FROM inventory i LEFT JOIN ("
            "  SELECT product_id, warehouse_id, sum(quantity) AS held FROM reservations"
            "  WHERE status IN ('ACTIVE', 'CONFIRMED') GROUP BY product_id, warehouse_id"
            ") r USING (product_id, warehouse_id)"
            " WHERE i.quantity_reserved <> coalesce(r.held, 0)"
        ).fetchone()
        made = conn.execute("SELECT count(*) FROM reservations").fetchone()
    return int(oversold[0]), int(drift[0]), int(made[0])  # type: ignore[index]


# --------------------------------------------------------------------------- main


@dataclass
class Many:
    result: Result  # closed loop: every connection sends its next check on the last answer
    paced: Result  # each connection one check every delay_ms
    delay_ms: int
    rss_before: float
    rss_peak: float
    rss_after: float


@dataclass
class Run:
    bare: Result
    stock: Result
    stock1: Result
    pg_select: Any
    bulk1: Result
    bulkc: Result
    reserve: Result
    pg_reserve: Any
    audit: tuple[int, int, int]
    many: Many | None
    workers: Result | None


def goal_ratio(value: float, raw: float) -> float | None:
    return value / raw if raw else None


def figures(run: Run, args: Any, note: str) -> list[Figure]:
    c, many = args.connections, args.many
    bare, stock, s1 = run.bare, run.stock, run.stock1
    out = [
        Figure(
            f"bare FastAPI app GET, c={c} (framework ceiling)",
            bare.rate,
            "req/s",
            note=note,
        ),
        Figure(f"bare FastAPI app CPU per request, c={c}", bare.cpu_us, "us"),
        Figure(
            f"API stock check GET /v1/inventory, c={c}, vs the bare app",
            stock.rate,
            "req/s",
            raw=bare.rate,
            ratio=goal_ratio(stock.rate, bare.rate),
            goal=">= 0.6x bare app",
        ),
        Figure(
            f"API stock check p99 vs its p50, c={c}",
            stock.p99_ms,
            "ms",
            raw=stock.p50_ms,
            ratio=goal_ratio(stock.p99_ms, stock.p50_ms),
            goal="<= 3x p50",
        ),
        Figure(
            f"API stock check CPU per request of serve vs the bare app's, c={c}",
            stock.cpu_us,
            "us",
            raw=bare.cpu_us,
            ratio=goal_ratio(stock.cpu_us, bare.cpu_us),
        ),
        Figure(
            f"API stock check vs pgbench running its SELECT, c={c}",
            stock.rate,
            "req/s",
            raw=run.pg_select.tps,
            ratio=goal_ratio(stock.rate, run.pg_select.tps),
        ),
        Figure("API stock check p50, c=1", s1.p50_ms, "ms", goal="<= 1 ms"),
        Figure("API stock check p99, c=1", s1.p99_ms, "ms", goal="<= 10 ms"),
        Figure("API stock check CPU per request, c=1", s1.cpu_us, "us"),
        Figure("API bulk stock 1000 ids p95, c=1", run.bulk1.p95_ms, "ms", goal="<= 5 ms"),
        Figure("API bulk stock 1000 ids p50, c=1", run.bulk1.p50_ms, "ms"),
        Figure("API bulk stock 1000 ids p99, c=1", run.bulk1.p99_ms, "ms"),
        Figure(f"API bulk stock 1000 ids, c={c}", run.bulkc.rate, "req/s"),
        Figure(f"API bulk stock 1000 ids CPU per request, c={c}", run.bulkc.cpu_us, "us"),
        Figure(
            f"API reserve POST /v1/inventory/reserve, c={c}, vs pgbench reserve",
            run.reserve.rate,
            "reservations/s",
            raw=run.pg_reserve.tps,
            ratio=goal_ratio(run.reserve.rate, run.pg_reserve.tps),
            goal=">= 0.5x pgbench",
        ),
        Figure(f"API reserve p50, c={c}", run.reserve.p50_ms, "ms"),
        Figure(f"API reserve p99, c={c}", run.reserve.p99_ms, "ms"),
        Figure(f"API reserve CPU per request, c={c}", run.reserve.cpu_us, "us"),
        Figure("API reserve oversold units", run.audit[0], "units", goal="0"),
        Figure(
            "API reserve rows whose reserved differs from their holds",
            run.audit[1],
            "rows",
            goal="0",
        ),  # fmt: skip
    ]
    if run.many is not None:
        m = run.many
        t = f"{args.many_seconds:.0f} s"
        paced = f"{many} connections paced (one check each per {m.delay_ms} ms on average)"
        closed = f"{many} connections closed loop"
        out += [
            Figure(f"API stock check, {closed}, {t}, errors", m.result.bad, "errors", goal="0"),
            Figure(f"API stock check p99, {closed}", m.result.p99_ms, "ms", goal="<= 1000 ms"),
            Figure(f"API stock check, {closed}", m.result.rate, "req/s"),
            Figure(f"API stock check, {paced}, {t}, errors", m.paced.bad, "errors", goal="0"),
            Figure(f"API stock check p99, {paced}", m.paced.p99_ms, "ms", goal="<= 1000 ms"),
            Figure(f"API stock check p50, {paced}", m.paced.p50_ms, "ms"),
            Figure(f"API stock check, {paced}", m.paced.rate, "req/s"),
            Figure(
                f"serve memory (RSS) peak during the {many}-connection run vs before it",
                m.rss_peak,
                "MB",
                raw=m.rss_before,
                ratio=goal_ratio(m.rss_peak, m.rss_before),
            ),
            Figure(f"serve memory (RSS) after the {many}-connection run", m.rss_after, "MB"),
        ]
    if run.workers is not None:
        w = run.workers
        out.append(
            Figure(
                f"API stock check, c={c}, serve --workers {args.compare_workers} vs --workers 1",
                w.rate,
                "req/s",
                raw=stock.rate,
                ratio=goal_ratio(w.rate, stock.rate),
            )
        )
        out.append(
            Figure(f"API stock check p99, c={c}, --workers {args.compare_workers}", w.p99_ms, "ms")
        )
    return out


def measure_many(server: Server, connections: int, seconds: float, capacity: float) -> Many:
    """Many keep-alive connections of stock checks, twice: closed loop (each connection sends
    its next check as soon as it has the answer: the latency is then connections / rate, the
    server's queue), then paced (each connection one check every delay, offering half the
    rate measured at --connections: 1,000 clients holding their connection open, the server
    not saturated). The group's RSS is sampled every 0.5 s while they run."""
    before = server.rss_mb()
    peak = [before]

    def watch() -> None:
        peak[0] = max(peak[0], server.rss_mb())

    check = Workload("stock check", "", random_rows=True)
    result = measure(server, check, connections, seconds, watch, True)
    delay_ms = max(1, round(connections / (0.5 * capacity) * 1000)) if capacity else 1000
    log(f"paced: each connection one check every {delay_ms} ms")
    paced_w = Workload("stock check (paced)", "", random_rows=True, delay_ms=delay_ms)
    paced = measure(server, paced_w, connections, seconds, watch, True)
    after = server.rss_mb()
    log(f"RSS {before:.0f} MB before, {peak[0]:.0f} MB peak, {after:.0f} MB after")
    return Many(result, paced, delay_ms, before, max(peak[0], after), after)


def run_phases(url: str, prefix: str, args: Any, bodies: Sequence[str]) -> Run:
    c, s = args.connections, args.seconds
    stock_w = Workload("stock check", "", random_rows=True)
    with bare_app() as bare, serving(url, prefix, 1) as serve:
        check_answers(serve, bodies)
        half = s / 2
        b1 = measure(bare, Workload("bare", "/bare", auth=False), c, half)
        s1 = measure(serve, stock_w, c, half)
        s2 = measure(serve, stock_w, c, half)
        b2 = measure(bare, Workload("bare", "/bare", auth=False), c, half)
    with serving(url, prefix, 1) as serve:  # alone on the machine now
        pg_select = pgbench_select(url, c, s)
        stock1 = measure(serve, stock_w, 1, s)
        bulk = Workload("bulk stock", "/v1/batch/stock", bodies=bodies)
        bulk1 = measure(serve, bulk, 1, s)
        bulkc = measure(serve, bulk, c, s)
        reserve_w = Workload("reserve", "/v1/inventory/reserve", reserve=True)
        r1 = measure(serve, reserve_w, c, half)
        p1 = pgbench_reserve(url, c, half)
        p2 = pgbench_reserve(url, c, half)
        r2 = measure(serve, reserve_w, c, half)
        audit = stock_audit(url)
        log(f"audit: {audit[0]} oversold units, {audit[1]} drifting rows, {audit[2]:,} holds")
        capacity = combine(s1, s2).rate
        many = measure_many(serve, args.many, args.many_seconds, capacity) if args.many else None
    workers = None
    if args.compare_workers:
        with serving(url, prefix, args.compare_workers) as served:
            workers = measure(served, stock_w, c, s)
    return Run(
        combine(b1, b2),
        combine(s1, s2),
        stock1,
        pg_select,
        bulk1,
        bulkc,
        combine(r1, r2),
        p1.merge(p2),
        audit,
        many,
        workers,
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--connections", type=int, default=32, help="concurrency of the rate phases")
    p.add_argument("--many", type=int, default=1000, help="connections of the many-run (0: skip)")
    p.add_argument("--many-seconds", type=float, default=30.0, help="length of the many-run")
    p.add_argument("--compare-workers", type=int, default=2, help="serve --workers W (0: skip)")
    p.add_argument("--quick", action="store_true", help="2 s phases, a 5 s many-run")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.many_seconds = min(args.seconds, 2.0), min(args.many_seconds, 5.0)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not on PATH (Debian package wrk; scripts/bench_tools.sh)")
    if not shutil.which("pgbench"):
        raise SystemExit("pgbench is not on PATH (Debian package postgresql-client)")
    prefix = f"benchapi{uuid.uuid4().hex[:8]}"
    bodies = bulk_bodies()
    load_before = os.getloadavg()
    try:
        with fresh_pg_database("stockctl_bench_api") as url:
            prepare(url, prefix)
            run = run_phases(url, prefix, args, bodies)
    finally:
        cleanup_redis(prefix)
    load_after = os.getloadavg()
    note = (
        f"wrk on the same {os.cpu_count()}-core machine as the servers, PostgreSQL and Redis; "
        f"stockctl serve --workers 1 (access log on), {args.seconds:.0f} s per phase; "
        "load average (1 / 5 / 15 min) "
        f"{' / '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{' / '.join(f'{x:.1f}' for x in load_after)} after"
        + (
            " (other work was running on the machine: figures are lower than on an idle one)"
            if max(load_before[0], load_after[0]) > 1.5
            else ""
        )
    )
    emit(figures(run, args, note), args.json)


if __name__ == "__main__":
    main()
