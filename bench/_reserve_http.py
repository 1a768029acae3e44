"""bench/reserve.py's HTTP phase: reserves of one hot row through a real ``stockctl serve``.

``stockctl serve`` (one process, as shipped: merged reservations on by default, access log to
/dev/null) on the bench database; ``wrk`` with C connections POSTs
``/v1/inventory/reserve {"product_id", "warehouse_id", "quantity": 1}`` for N seconds. Its
``done`` hook prints one line: requests, non-2xx answers, socket errors, duration and p99.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import STOCKCTL, log

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"product_id":"%s","warehouse_id":"%s","quantity":1}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration, latency:percentile(99)))
end
"""


@dataclass
class HttpResult:
    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    p99_ms: float
    warmup: int = 0  # reservations made by the untimed warm-up before

    @property
    def successes(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rate(self) -> float:
        return self.successes / self.seconds if self.seconds else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hot_row_over_http(
    url: str, product: str, warehouse: str, connections: int, seconds: int
) -> HttpResult:
    """wrk against ``stockctl serve`` on ``url``'s database (a short untimed warm-up first)."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env["STOCKCTL_DATABASE_URL"] = url
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-") as tmp:
        script = Path(tmp) / "reserve.lua"
        script.write_text(LUA % (product, warehouse), encoding="utf-8")
        errlog = Path(tmp) / "serve.err"
        with errlog.open("w") as err:
            proc = subprocess.Popen(
                [STOCKCTL, "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"stockctl serve exited: {errlog.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("stockctl serve did not answer /health within 60 s")
                time.sleep(0.2)
            warm = _wrk(script, base, connections, 1)  # warm-up: connections, pool, merges
            result = _wrk(script, base, connections, seconds)
            result.warmup = warm.successes
            log(
                f"  http {result.rate:,.0f}/s over {result.seconds:.1f} s ({result.non_2xx} "
                f"non-2xx, {result.socket_errors} socket errors), p99 {result.p99_ms:.1f} ms"
            )
            return result
        finally:
            with_group = proc.pid
            try:
                os.killpg(with_group, signal.SIGTERM)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(with_group, signal.SIGKILL)
                proc.wait()


def _wrk(script: Path, base: str, connections: int, seconds: int) -> HttpResult:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    done = subprocess.run(
        [*cmd, f"{base}/v1/inventory/reserve"], capture_output=True, text=True, check=False
    )
    found = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    n, bad, sock, us, p99 = (int(x) for x in found.groups())
    return HttpResult(n, bad, sock, us / 1e6, p99 / 1000)
