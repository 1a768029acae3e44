"""Scale-out: one `stockctl worker run --only processor` process against two in one consumer
group, on the same pre-published events; and two with one killed (SIGKILL) mid-run.

Set-up: a fresh PostgreSQL database (dropped afterwards), `stockctl init` + `stockctl seed
--products 2000 --warehouses 20`, every row given a million more units; the rows are read
(the initial state), then ``--changes`` changes are committed through the library (16 threads,
80% reserve 1 unit, 20% adjust +-1, rows at random) and the outbox is published to the streams
once (the relay, in burst mode): every run below reads these same entries. Redis is the
benchmarks' own database (see bench/_pipeline.py).

Each run has its own consumer group and cache prefix: the cache is filled with the initial
rows, the group is created at the end of the streams, the worker processes are started
(``--consumer`` names differ; STOCKCTL_WORKER_CLAIM_IDLE_MS=1000) and, once every one has a
heartbeat, the group is moved to the start of the streams (XGROUP SETID 0) and the clock
starts; it stops when the group has no entry left unread or pending. Then each worker's
processed count is read from its heartbeat (``jobs.processor``), the workers are stopped with
SIGTERM (exit 0 expected) and the cache is compared with the database for every product
(stockctl.core.cache.verify): a run that leaves a difference fails the benchmark.

Runs: one process, two processes (each ``--repeat`` times, ordered 1 2 2 1 ... so a drift in
machine load weighs on both), and the kill run: two processes, and when half of the entries
are done one of them is stopped (SIGSTOP) at a moment it holds delivered, unacked entries and
killed (SIGKILL); the other must take them over (XAUTOCLAIM after 1 s idle) and finish. Lost
= entries left unread or pending + dead letters + products whose cache differs from the
database; it must be 0.

On two cores shared with PostgreSQL, Redis and whatever else runs, a second process has little
idle CPU to use: the cores each process used are reported beside the rates.

Usage: bench/scaleout.py [--json] [--quick] [--changes N] [--repeat R] [--worker-args ARGS]
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import Figure, emit, fresh_pg_database, log, median, parser, stockctl
from _pipeline import (
    Lane,
    Worker,
    bench_lane,
    consumer_pending,
    dead_letters,
    invariant_violations,
    load_average,
    monotonic,
    processed,
    raise_stock,
    stream_entries,
    topics,
    wait_heartbeats,
    workers,
)

PRODUCTS = 2000
WAREHOUSES = 20
THREADS = 16
RUN_TIMEOUT = 300.0


def product_ids() -> list[str]:
    return [f"P{p:06d}" for p in range(1, PRODUCTS + 1)]


# --------------------------------------------------------------------------- the events


def make_changes(url: str, n: int) -> float:
    """N changes through the library from THREADS threads; returns the seconds taken."""
    import stockctl as lib

    rows = [(p, f"WH{w:03d}") for p in product_ids() for w in range(1, WAREHOUSES + 1)]
    sc = lib.connect(url, db_pool_max_idle=THREADS)
    errors: list[str] = []

    def work(k: int) -> None:
        rng = random.Random(k)
        for _ in range(n // THREADS + (k < n % THREADS)):
            p, w = rows[rng.randrange(len(rows))]
            try:
                if rng.random() < 0.8:
                    sc.reserve(p, w, 1)
                else:
                    sc.adjust(p, w, rng.choice((1, -1)), reason="scaleout")
            except Exception as exc:  # reported; the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")

    started = monotonic()
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sc.close()
    if errors:
        raise SystemExit(f"{len(errors)} changes failed, first: {errors[0]}")
    return monotonic() - started


def publish(app: Any) -> None:
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    Runner(app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)


# --------------------------------------------------------------------------- one run


def group_left(client: Any, group: str) -> int:
    """Entries of the group not yet read (lag) or not yet acked (pending), over the topics."""
    names = topics()
    pipe = client.pipeline(transaction=False)
    for t in names:
        pipe.xinfo_groups(t)
    left = 0
    for groups in pipe.execute():
        mine = next((g for g in groups if g["name"] in (group, group.encode())), None)
        if mine is not None:
            if mine.get("lag") is None:
                raise SystemExit(f"Redis cannot tell the lag of group {group}")
            left += int(mine["pending"]) + int(mine["lag"])
    return left


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_seconds(client: Any) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@dataclass
class Kill:
    held: int  # entries the victim had delivered and not acked when killed
    processed_before: int  # its processed count in its last heartbeat
    attempts: int
    at: float  # seconds into the run
    recovered_after: float = 0.0  # seconds from the kill to the group's end


@dataclass
class RunResult:
    label: str
    processes: int
    events: int
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # consumer -> processed
    cores: dict[str, float] = field(default_factory=dict)  # consumer -> cores used
    redis_cores: float = 0.0  # the Redis server's CPU over the run (server-wide)
    left: int = 0
    dead: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    exits: list[int] = field(default_factory=list)
    kill: Kill | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        return self.left + self.dead + self.violations.get("cache_drift_products", 0)


def kill_holding(client: Any, group: str, victim: Worker, started: float) -> Kill:
    """SIGSTOP the victim until it is caught holding unacked entries, then SIGKILL it."""
    for attempt in range(1, 501):
        os.kill(victim.pid, signal.SIGSTOP)
        time.sleep(0.005)  # let a read it had sent be answered
        mine = consumer_pending(client, group)
        held = sum(
            n
            for c, n in mine.items()
            if c == victim.consumer or c.startswith(victim.consumer + "-")
        )
        if held:
            victim.kill()
            beat = client.get(f"stockctl:heartbeat:{group}:{victim.consumer}")  # lives 3 s on
            before = processed(json.loads(beat) if beat else None)
            return Kill(held, before, attempt, monotonic() - started)
        os.kill(victim.pid, signal.SIGCONT)
        time.sleep(0.01 * random.random())
        if group_left(client, group) == 0:
            break
    raise SystemExit(f"never caught {victim.consumer} holding pending entries ({attempt} tries)")


def wait_group(client: Any, group: str, run: RunResult, ws: Sequence[Worker], app: Any) -> None:
    """Until the group has nothing left (killing ws[0] halfway in the kill run)."""
    started = monotonic()
    mark = run.events * 3 // 4
    want_kill = run.label.startswith("kill")
    while True:
        left = group_left(client, group)
        if want_kill and run.kill is None and left <= mark:
            run.kill = kill_holding(client, group, ws[0], started)
            log(
                f"  killed {ws[0].consumer} at {run.kill.at:.2f} s holding {run.kill.held} "
                f"unacked entries (caught on attempt {run.kill.attempts})"
            )
            continue
        if left == 0:
            break
        if monotonic() - started > RUN_TIMEOUT:
            run.left = left
            log(f"  {left} entries still left after {RUN_TIMEOUT:.0f} s")
            break
        time.sleep(0.01)
    run.seconds = monotonic() - started
    if run.kill is not None:
        run.kill.recovered_after = run.seconds - run.kill.at


def fill(app: Any, initial: dict[str, list[Any]]) -> None:
    items = list(initial.items())
    for start in range(0, len(items), 500):
        app.cache().fill(dict(items[start : start + 500]))


def one_run(
    lane: Lane,
    url: str,
    label: str,
    processes: int,
    initial: dict[str, list[Any]],
    extra: list[str],
) -> RunResult:
    client = lane.client
    run = RunResult(label, processes, stream_entries(client))
    app_id, prefix = lane.names(label)
    app = lane.app(url, app_id, prefix)
    dead_before = dead_letters(client)
    try:
        fill(app, initial)
        for t in topics():
            client.xgroup_create(t, app_id, id="$", mkstream=True)
        env = lane.env(
            url,
            app_id,
            prefix,
            STOCKCTL_WORKER_CLAIM_IDLE_MS="1000",
            STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="3",
        )
        names = [f"{label}-{k}" for k in range(processes)]
        with workers(env, names, "--only", "processor", *extra) as ws:
            wait_heartbeats(app, ws)
            cpu = {w.consumer: cpu_seconds(w.pid) for w in ws}
            redis_cpu = redis_seconds(client)
            for t in topics():
                client.xgroup_setid(t, app_id, "0", entries_read=0)
            wait_group(client, app_id, run, ws, app)
            run.redis_cores = (redis_seconds(client) - redis_cpu) / run.seconds
            alive = [w for w in ws if w.proc.poll() is None]
            run.cores = {
                w.consumer: (cpu_seconds(w.pid) - cpu[w.consumer]) / run.seconds for w in alive
            }
            beats = wait_heartbeats(app, alive, after=time.time())
            run.counts = {w.consumer: processed(beats.get(w.consumer)) for w in alive}
            if run.kill is not None:
                run.counts[ws[0].consumer] = run.kill.processed_before
            run.exits = [w.stop() for w in alive]
        run.dead = dead_letters(client) - dead_before
        run.violations = invariant_violations(app, product_ids())
    finally:
        app.close()
        lane.clean_prefix(prefix)
    return run


# --------------------------------------------------------------------------- the whole bench


def prepare(url: str, lane: Lane, changes: int) -> tuple[dict[str, list[Any]], float]:
    """Seeded database, its initial rows, and ``changes`` changes published to the streams."""
    from stockctl.core.projection import RowState

    log(f"init + seed {PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
    stockctl("init", database_url=url)
    stockctl("seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES), database_url=url)
    raise_stock(url)
    app_id, prefix = lane.names("pub")
    app = lane.app(url, app_id, prefix)
    try:
        rows = app.store.inventory_for_products(product_ids())
        initial = {p: [RowState.of(r) for r in rs] for p, rs in rows.items()}
        log(f"committing {changes:,} changes through the library ({THREADS} threads) ...")
        seconds = make_changes(url, changes)
        publish(app)
    finally:
        app.close()
    log(
        f"{changes:,} changes in {seconds:.1f} s ({changes / seconds:,.0f}/s); "
        f"{stream_entries(lane.client):,} entries on the streams"
    )
    return initial, seconds


def plan(repeat: int) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for i in range(repeat):
        pair = [("one", 1), ("two", 2)] if i % 2 == 0 else [("two", 2), ("one", 1)]
        runs += [(f"{name}{i}", n) for name, n in pair]
    return [*runs, ("kill", 2)]


def run_all(args: Any) -> list[RunResult]:
    extra = shlex.split(args.worker_args)
    results: list[RunResult] = []
    with fresh_pg_database("stockctl_bench_scaleout") as url, bench_lane() as lane:
        initial, _ = prepare(url, lane, args.changes)
        for label, processes in plan(args.repeat):
            run = one_run(lane, url, label, processes, initial, extra)
            cores = ", ".join(f"{c} {v:.2f}" for c, v in run.cores.items())
            log(
                f"run {label}: {run.events:,} entries in {run.seconds:.2f} s = {run.rate:,.0f}/s; "
                f"processed per worker {run.counts}; cores used {cores}, Redis "
                f"{run.redis_cores:.2f}; lost {run.lost}; "
                f"{run.violations}; exits {run.exits}"
            )
            results.append(run)
    return results


def figures(results: list[RunResult], args: Any, load_start: str) -> list[Figure]:
    ones = [r for r in results if r.label.startswith("one")]
    twos = [r for r in results if r.label.startswith("two")]
    kill = next(r for r in results if r.label == "kill")
    one, two = median([r.rate for r in ones]), median([r.rate for r in twos])

    def runs(rs: list[RunResult]) -> str:
        return ", ".join(
            f"{r.rate:,.0f}/s (cores: workers {'+'.join(f'{v:.2f}' for v in r.cores.values())}, "
            f"Redis {r.redis_cores:.2f})"
            for r in rs
        )

    shares = [min(r.counts.values()) / max(1, sum(r.counts.values())) for r in twos]
    k = kill.kill
    kill_note = (
        "the victim was never killed"
        if k is None
        else (
            f"SIGKILLed {k.at:.2f} s in, holding {k.held} delivered unacked entries (processed "
            f"{k.processed_before:,} by its last heartbeat); the survivor finished "
            f"{k.recovered_after:.2f} s later (claim idle 1 s); per worker {kill.counts}"
        )
    )
    events = results[0].events
    return [
        Figure(
            "scaleout_one_worker_events_per_s",
            round(one),
            "events/s",
            note=(
                f"{events:,} pre-published entries from {args.changes:,} library changes on "
                f"{PRODUCTS:,} x {WAREHOUSES} rows, `worker run --only processor` "
                f"{args.worker_args or '(default 10 threads x batch 100)'}; one process: "
                f"{runs(ones)}; two: {runs(twos)}; load average at start {load_start}, at end "
                f"{load_average()}"
            ),
        ),
        Figure(
            "scaleout_two_workers_events_per_s",
            round(two),
            "events/s",
            raw=round(one),
            ratio=round(two / one, 3) if one else None,
            goal="> 1x one worker",
        ),
        Figure(
            "scaleout_two_workers_min_share",
            round(min(shares), 3),
            "of events",
            goal="> 0 (none idle)",
            note="the smaller worker's share of the entries, from the heartbeats' jobs.processor",
        ),
        Figure("scaleout_kill_lost_events", kill.lost, "events", goal="0", note=kill_note),
    ]


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10,000 changes, one run of each")
    p.add_argument("--changes", type=int, default=None, help="library changes (default 100,000)")
    p.add_argument("--repeat", type=int, default=None, help="runs of one and two (default 2)")
    p.add_argument("--worker-args", default="", help="extra `worker run` options")
    args = p.parse_args()
    args.changes = args.changes or (10_000 if args.quick else 100_000)
    args.repeat = args.repeat or (1 if args.quick else 2)
    load_start = load_average()
    log(f"load average at start: {load_start}")
    results = run_all(args)
    emit(figures(results, args, load_start), args.json)
    bad = [r.label for r in results if r.lost or any(r.exits) or sum(r.violations.values())]
    bad += [r.label for r in results if r.label != "kill" and min(r.counts.values()) == 0]
    if bad:
        log(f"FAILED runs: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
