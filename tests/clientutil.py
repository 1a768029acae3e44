"""Helpers for the warehouse-client tests: API response bodies, a real ``stockctl serve``
process, and a slow local HTTP server for the concurrency proof."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

_SCRIPT = Path(sys.executable).with_name("stockctl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stockctl"]
WHEN = "2026-01-02T03:04:05.123456Z"
BASE = "http://warehouse.test"


def row_json(product_id: str = "P-1", warehouse_id: str = "W-1", **over: Any) -> dict[str, Any]:
    """An ``InventoryRow`` as the API returns it."""
    body: dict[str, Any] = {
        "product_id": product_id,
        "warehouse_id": warehouse_id,
        "quantity_available": 10,
        "quantity_reserved": 3,
        "sellable": 7,
        "low_stock_threshold": 2,
        "status": "IN_STOCK",
        "version": 4,
        "last_movement_at": WHEN,
    }
    body.update(over)
    return body


def product_json(product_id: str, *rows: dict[str, Any]) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "warehouses": list(rows),
        "total_available": sum(r["quantity_available"] for r in rows),
        "total_reserved": sum(r["quantity_reserved"] for r in rows),
        "total_sellable": sum(r["sellable"] for r in rows),
    }


def reservation_json(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": random.randrange(1, 2**62),
        "product_id": "P-1",
        "warehouse_id": "W-1",
        "quantity": 2,
        "status": "ACTIVE",
        "order_id": "O-1",
        "created_at": WHEN,
        "expires_at": "2026-01-02T03:19:05.123456Z",
        "updated_at": WHEN,
    }
    body.update(over)
    return body


def reserved_json(**over: Any) -> dict[str, Any]:
    """The guide's reserve answer: the hold under ``reservation``."""
    return {"reservation": reservation_json(**over)}


def problem_json(status: int, slug: str, detail: str = "refused") -> dict[str, Any]:
    return {
        "type": f"https://stockctl.dev/problems/{slug}",
        "title": slug,
        "status": status,
        "detail": detail,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a stockctl process: no STOCKCTL_* of the developer's, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STOCKCTL_") or k.startswith("STOCKCTL_TEST_")
    }
    env.update({"NO_COLOR": "1", "COLUMNS": "200", **extra})
    return env


@dataclass
class Server:
    """A ``stockctl serve`` process on a free loopback port."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextmanager
def serve(database_url: str, workdir: Path, command: str = "serve", **env: str) -> Iterator[Server]:
    """Start ``stockctl serve`` (or ``up``: the API and the worker jobs) on ``database_url``
    (already initialised); stop it at the end."""
    port = free_port()
    log = workdir / f"{command}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*COMMAND, "--database-url", database_url, command, "--port", str(port)],
            env=clean_env(XDG_DATA_HOME=str(workdir / "xdg"), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"stockctl serve exited: {server.log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"stockctl serve not ready: {server.log.read_text()[-2000:]}")


@dataclass
class SlowServer:
    """Answers every request after ``delay`` seconds; counts requests and the peak in flight."""

    url: str
    delay: float
    requests: int = 0
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Threading(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 20 connects at once must not wait on the listen backlog


@contextmanager
def slow_server(delay: float = 0.1) -> Iterator[SlowServer]:
    """A real HTTP server (a thread per connection) that answers a product's stock slowly."""
    state = SlowServer("", delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's pool expects

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.enter()
            try:
                time.sleep(state.delay)
            finally:
                state.leave()
            if self.path.startswith("/v1/batch/stock"):
                ids = json.loads(raw)["product_ids"]
                data: dict[str, Any] = {"stocks": dict.fromkeys(ids, 1), "missing": []}
            else:
                product = self.path.rstrip("/").rsplit("/", 1)[-1]
                data = product_json(product, row_json(product))
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = _Threading(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
