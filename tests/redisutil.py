"""Redis servers a test starts, and may break, itself: fault injection never touches the shared
test servers (the standalone Redis, the test cluster on 7100-7105, the sentinel group).

* ``PrivateRedis``: one standalone redis-server on a free port;
* ``PrivateCluster``: 3 masters + 3 replicas on free ports;
* ``PrivateSentinel``: a master, a replica and 3 sentinels on free ports.

Each is a context manager: on the way out, even when the test failed, it kills every process it
started (resuming paused ones first) and deletes its directory. No persistence (``save ""``, no
AOF): a restarted server starts empty. Every wait has a deadline, so a broken server fails the
test in seconds rather than hanging it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

HOST = "127.0.0.1"
_taken: set[int] = set()  # ports handed out by this process, so two servers never share one


def free_port() -> int:
    """A TCP port nothing listens on now (and not handed out before by this process)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _taken:
            _taken.add(port)
            return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Server:
    """One redis-server process (plain, cluster node or sentinel) with its own config file."""

    def __init__(self, root: Path, port: int, config: list[str], sentinel: bool = False) -> None:
        self.port = port
        self.dir = root / str(port)
        self.dir.mkdir(parents=True)
        self.config = self.dir / "redis.conf"
        self.log = self.dir / "redis.log"
        # A config file, not flags: sentinel rewrites it, and the data nodes' too on failover.
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{self.dir}"',
            f'logfile "{self.log}"',
            *([] if sentinel else ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]),
            *config,
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"redis-server on {self.port} is not running"
        return self.process.pid

    def client(self, **options: Any) -> redis.Redis:
        """A client of this server alone; no retries, so a fault shows at once."""
        options.setdefault("socket_timeout", 5)
        options.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(HOST, self.port, decode_responses=True, **options)

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            with self.client(socket_timeout=timeout, socket_connect_timeout=timeout) as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as c:
            return dict(c.info(section))

    def cluster_state(self) -> str:
        with self.client() as c:
            return str(c.execute_command("CLUSTER INFO")["cluster_state"])

    def start(self, timeout: float = 10.0) -> None:
        """Start (again) on the same port; wait until it answers."""
        assert not self.running(), f"redis-server on {self.port} already runs"
        args = ["redis-server", str(self.config), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_until(self._up, timeout, f"redis-server to answer on {self.port}")
        except AssertionError as exc:
            self.kill()
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{exc}; its log ends:\n{tail}") from None

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server on {self.port} exited {self.process.returncode}")
        return self.ping()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop_nosave(self, timeout: float = 10.0) -> None:
        """``redis-cli shutdown nosave``: a clean stop that writes nothing."""
        subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=timeout,
        )
        assert self.process is not None
        self.process.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (``kill -9``), as a crash; a paused server too. Waits until it is gone."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None and self.running(), f"{self.port} is not running"
        self.process.send_signal(sig)


class _Servers:
    """A temporary directory and the servers in it; all killed and removed on exit."""

    def __init__(self, kind: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"stockctl-{kind}-"))
        self.servers: list[Server] = []

    def _server(self, config: list[str], sentinel: bool = False) -> Server:
        server = Server(self.root, free_port(), config, sentinel)
        self.servers.append(server)
        server.start()
        return server

    def server(self, port: int) -> Server:
        return next(s for s in self.servers if s.port == port)

    def _setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):  # clean up the rest whatever happens
                server.kill()
            _taken.discard(server.port)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateRedis(_Servers):
    """A standalone redis-server of the test's own: ``with PrivateRedis() as r: r.url``."""

    def __init__(self) -> None:
        super().__init__("redis")

    def _setup(self) -> None:
        self._server([])

    @property
    def node(self) -> Server:
        return self.servers[0]

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.node.pid

    def client(self, **options: Any) -> redis.Redis:
        return self.node.client(**options)

    def start(self) -> None:
        self.node.start()

    def stop_nosave(self) -> None:
        self.node.stop_nosave()

    def pause(self) -> None:
        self.node.pause()

    def resume(self) -> None:
        self.node.resume()

    def kill(self) -> None:
        self.node.kill()


@dataclass(frozen=True)
class NodeInfo:
    """One line of CLUSTER NODES."""

    id: str
    port: int
    flags: frozenset[str]  # master, slave, myself, fail?, fail, ...
    master_id: str  # "-" for a master
    slots: int  # how many slots it serves

    @classmethod
    def parse(cls, line: str) -> NodeInfo:
        node_id, address, flags, master_id, *_ = fields = line.split()
        slots = 0
        for part in fields[8:]:
            if not part.startswith("["):  # "[slot->-id]": a slot being migrated
                first, _, last = part.partition("-")
                slots += int(last or first) - int(first) + 1
        port = int(address.split("@")[0].rpartition(":")[2])
        return cls(node_id, port, frozenset(flags.split(",")), master_id, slots)


class PrivateCluster(_Servers):
    """3 masters + 3 replicas of the test's own (cluster-node-timeout 1 s by default, so a
    killed master's replica takes over in about 2-3 s)."""

    def __init__(self, node_timeout_ms: int = 1000) -> None:
        super().__init__("cluster")
        self.node_timeout_ms = node_timeout_ms
        self.killed: set[int] = set()

    def _setup(self) -> None:
        for _ in range(6):
            self._server(
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {self.node_timeout_ms}",
                    f"cluster-port {free_port()}",  # not port + 10000, which may be taken
                ]
            )
        nodes = [f"{HOST}:{s.port}" for s in self.servers]
        self._cli("--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes")
        self.wait_ok()

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports[:3])

    def client(self, **options: Any) -> RedisCluster:
        options.setdefault("socket_timeout", 5)
        live = [ClusterNode(HOST, s.port) for s in self.servers if s.running()]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=live, decode_responses=True, **options)

    def nodes(self) -> list[NodeInfo]:
        """CLUSTER NODES as a live node sees it."""
        server = next(s for s in self.servers if s.running())
        with server.client() as c:
            text = str(c.execute_command("CLUSTER", "NODES"))  # two words: the raw text
        return [NodeInfo.parse(line) for line in text.splitlines()]

    def masters(self) -> list[int]:
        """The ports of the masters that serve slots, by port; a failed one is left out."""
        return sorted(
            n.port
            for n in self.nodes()
            if "master" in n.flags and n.slots and not {"fail", "fail?"} & n.flags
        )

    def slots(self, port: int) -> int:
        """How many slots the master on ``port`` serves."""
        return next(n.slots for n in self.nodes() if n.port == port)

    def kill_master(self, i: int = 0) -> int:
        """``kill -9`` the i-th of ``masters()``; its port."""
        port = self.masters()[i]
        self.server(port).kill()
        self.killed.add(port)
        return port

    def wait_failover(self, timeout: float = 20.0) -> list[int]:
        """Until 3 live masters serve every slot and every live node says cluster_state:ok;
        the masters' ports."""

        def done() -> bool:
            live = [s for s in self.servers if s.running()]
            if not all(s.cluster_state() == "ok" for s in live):
                return False
            masters = self.masters()
            return len(masters) == 3 and not self.killed & set(masters)

        wait_until(done, timeout, "the cluster to fail over")
        return self.masters()

    def wait_ok(self, timeout: float = 20.0) -> None:
        self.wait_failover(timeout)

    def reshard(self, n_slots: int, source: int, target: int) -> None:
        """Move ``n_slots`` slots (with their keys) from the master on port ``source`` to the
        master on port ``target`` (``redis-cli --cluster reshard``)."""
        ids = {n.port: n.id for n in self.nodes()}
        self._cli(
            "--cluster", "reshard", f"{HOST}:{target}",
            "--cluster-from", ids[source], "--cluster-to", ids[target],
            "--cluster-slots", str(n_slots), "--cluster-yes",
        )  # fmt: skip
        self.wait_ok()

    def _cli(self, *args: str) -> None:
        done = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"redis-cli {args[:2]} failed:\n{done.stdout}{done.stderr}"


class PrivateSentinel(_Servers):
    """A master, a replica and 3 sentinels (quorum 2, down-after 1 s) of the test's own."""

    def __init__(self, name: str = "private", down_after_ms: int = 1000) -> None:
        super().__init__("sentinel")
        self.name = name
        self.down_after_ms = down_after_ms
        self.sentinels: list[Server] = []
        self.data: list[Server] = []

    def _setup(self) -> None:
        master = self._server([])
        replica = self._server([f"replicaof {HOST} {master.port}"])
        self.data = [master, replica]
        # In sync before the sentinels start: they find replicas in the master's INFO, which
        # they read at connect and then only every 10 s.
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up",
            10,
            "the replica to sync",
        )
        for _ in range(3):
            self.sentinels.append(
                self._server(
                    [
                        f"sentinel monitor {self.name} {HOST} {master.port} 2",
                        f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                        f"sentinel failover-timeout {self.name} 5000",
                    ],
                    sentinel=True,
                )
            )
        wait_until(self._ready, 20, "the sentinels to see the master, replica and each other")

    def _ready(self) -> bool:
        for s in self.sentinels:
            with s.client() as c:
                state = c.sentinel_master(self.name)
            if state["num-slaves"] != 1 or state["num-other-sentinels"] != 2:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.name}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A client of whichever server the sentinels name master (follows a failover)."""
        options.setdefault("socket_timeout", 5)
        sentinel = Sentinel([(HOST, s.port) for s in self.sentinels], socket_timeout=2)  # type: ignore[no-untyped-call]
        master: redis.Redis = sentinel.master_for(self.name, decode_responses=True, **options)  # type: ignore[no-untyped-call]
        return master

    def current_master(self) -> int:
        """The port every live sentinel names master (AssertionError while they disagree)."""
        named = set()
        for s in self.sentinels:
            if s.running():
                with s.client() as c:
                    _, port = c.sentinel_get_master_addr_by_name(self.name)
                named.add(int(port))
        assert len(named) == 1, f"the sentinels disagree on the master: {sorted(named)}"
        return named.pop()

    def failover(self, timeout: float = 20.0) -> int:
        """SENTINEL FAILOVER (no agreement needed): the new master's port."""
        old = self.current_master()
        with self.sentinels[0].client() as c:
            c.sentinel_failover(self.name)
        return self._wait_new_master(old, timeout)

    def kill_master(self, timeout: float = 30.0) -> int:
        """``kill -9`` the master; the sentinels agree it is down and promote the replica: the
        new master's port."""
        old = self.current_master()
        self.server(old).kill()
        return self._wait_new_master(old, timeout)

    def _wait_new_master(self, old: int, timeout: float) -> int:
        def promoted() -> bool:
            try:
                port = self.current_master()
            except AssertionError:
                return False
            return port != old and self.server(port).info("replication")["role"] == "master"

        wait_until(promoted, timeout, f"a new master in place of {old}")
        return self.current_master()


def daemon_env(pg_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment for a stockctl process of a fault test: this process's own minus every
    ``STOCKCTL_*`` variable, the given database and Redis, plain wide output, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        {
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "STOCKCTL_DATABASE_URL": pg_url,
            "STOCKCTL_REDIS_URL": redis_url,
        }
    )
    env.update(extra)
    return env
