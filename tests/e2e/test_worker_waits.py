"""A worker started while Redis does not answer waits for it and starts by itself.

On a Redis Cluster the client reads the slot map when it is made, so an outage at start used to
end ``worker run`` with exit 3; now it logs one line and waits (a burst run still fails at once).
The cluster is the test's own, paused with SIGSTOP and resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import stockctl
from tests.eventutil import COMMAND, wait_until
from tests.redisutil import PrivateCluster

pytestmark = pytest.mark.redis


def test_a_worker_started_during_an_outage_waits_then_starts(
    sqlite_url: str, tmp_path: Path
) -> None:
    sc = stockctl.connect(sqlite_url)
    sc.init()
    sc.close()
    log = tmp_path / "worker.log"
    with PrivateCluster() as cluster:
        env = {
            **os.environ,
            "STOCKCTL_DATABASE_URL": sqlite_url,
            "STOCKCTL_REDIS_URL": cluster.url,
            "STOCKCTL_REDIS_TIMEOUT_SECONDS": "0.5",
        }
        burst = subprocess.run(
            [*COMMAND, "worker", "run", "--burst", "--only", "processor"],
            env={**env, "STOCKCTL_REDIS_URL": "redis+cluster://127.0.0.1:1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert burst.returncode == 3, burst.stderr  # a one-off drain says so at once
        assert "Traceback" not in burst.stderr
        ports = cluster.ports
        for port in ports:
            cluster.server(port).pause()
        with log.open("w") as out:
            worker = subprocess.Popen(
                [*COMMAND, "worker", "run", "--only", "relay,processor"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: "waiting to start" in log.read_text(), 60, "the waiting line", every=0.1
            )
            time.sleep(1.5)  # still waiting, not exited
            assert worker.poll() is None, log.read_text()
            for port in ports:
                cluster.server(port).resume()
            wait_until(lambda: " running " in log.read_text(), 60, "the start", every=0.1)
            assert worker.poll() is None
        finally:
            for port in ports:
                cluster.server(port).resume()
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
        text = log.read_text()
        assert code == 0, text
        assert text.count("waiting to start") == 1, text
        assert "dependencies answer again" in text
        assert "Traceback" not in text
