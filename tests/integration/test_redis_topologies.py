"""The three Redis topologies the tests run against, and the private servers that fault-injection
tests break (tests/redisutil.py). Real redis-server processes, no mocks.

The shared ones (standalone, the cluster on 7100-7105, the sentinel group on 7200/7201 with
sentinels 7210-7212) are only written under a prefix of the test's own; failing over and
killing happen on private servers. Each private topology takes a few seconds to start and
to fail over (node timeout / down-after 1 s): the module runs in about 20-30 s.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import redis

from tests.conftest import (
    REDIS_CLUSTER_URL,
    REDIS_SENTINEL_URL,
    TOPOLOGY_SCRIPT,
    delete_redis_keys,
    parse_redis_url,
    redis_client,
)
from tests.redisutil import PrivateCluster, PrivateRedis, PrivateSentinel

pytestmark = pytest.mark.redis


def gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split()[1] == "Z" for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_each_topology_answers_and_loses_only_the_tests_keys(redis_topology_url: str) -> None:
    prefix = f"topo-{uuid.uuid4().hex[:10]}"
    client = redis_client(redis_topology_url)
    try:
        # keys in many slots: on the cluster they land on every master
        for i in range(30):
            client.set(f"{prefix}:{i}", i)
        client.set(f"{prefix}-neighbour", "kept")  # another test's key
        assert client.get(f"{prefix}:7") == b"7"
        assert delete_redis_keys(redis_topology_url, f"{prefix}:*") == 30
        assert [client.exists(f"{prefix}:{i}") for i in range(30)] == [0] * 30
        assert client.get(f"{prefix}-neighbour") == b"kept"
    finally:
        delete_redis_keys(redis_topology_url, f"{prefix}*")
        client.close()
    with pytest.raises(ValueError, match="prefix"):
        delete_redis_keys(redis_topology_url, "*")


def test_the_shared_topologies_are_what_the_readme_says(redis_topologies: None) -> None:
    cluster = parse_redis_url(REDIS_CLUSTER_URL)
    sentinel = parse_redis_url(REDIS_SENTINEL_URL)
    assert (cluster.kind, sentinel.kind, sentinel.service) == (
        "cluster",
        "sentinel",
        "stockctl-test",
    )
    client = redis_client(REDIS_CLUSTER_URL)
    try:
        assert isinstance(client, redis.RedisCluster)
        info = client.cluster_info()
        assert (info["cluster_size"], info["cluster_known_nodes"]) == ("3", "6")
    finally:
        client.close()
    master = redis_client(REDIS_SENTINEL_URL)
    try:
        assert master.info("replication")["role"] == "master"
    finally:
        master.close()


def test_the_set_up_script_does_nothing_when_all_is_up(redis_topologies: None) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(TOPOLOGY_SCRIPT)], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" already up") == 2, done.stdout
    assert time.monotonic() - started < 5


def test_private_redis_stops_restarts_pauses_and_dies() -> None:
    with PrivateRedis() as r:
        root, first_pid = r.root, r.pid
        with r.client() as c:
            c.set("k", "v")
            assert c.get("k") == "v"
        r.stop_nosave()
        with pytest.raises(redis.ConnectionError), r.client() as c:
            c.ping()
        r.start()  # the same port, nothing saved
        assert r.pid != first_pid and r.url.endswith(f":{r.port}/0")
        with redis.Redis.from_url(r.url, decode_responses=True) as c:
            assert c.get("k") is None
        r.pause()
        with pytest.raises(redis.TimeoutError), r.client(socket_timeout=0.3) as c:
            c.ping()
        r.resume()
        with r.client() as c:
            assert c.ping()
        second_pid = r.pid
        r.kill()
        assert gone(second_pid)
        r.start()
        third_pid = r.pid
    assert gone(third_pid) and not root.exists()


def test_private_servers_are_cleaned_up_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError), PrivateRedis() as r:
        root, pid = r.root, r.pid
        r.pause()  # even a paused one
        raise RuntimeError("the test failed")
    assert gone(pid) and not root.exists()


def test_private_cluster_reshard_moves_slots_with_their_keys() -> None:
    with PrivateCluster() as cluster:
        a, b, _ = cluster.masters()
        assert cluster.slots(a) + cluster.slots(b) + cluster.slots(_) == 16384
        before = cluster.slots(a), cluster.slots(b)
        with cluster.client() as c:
            for i in range(200):
                c.set(f"k{i}", i)
        cluster.reshard(100, a, b)
        assert (cluster.slots(a), cluster.slots(b)) == (before[0] - 100, before[1] + 100)
        with cluster.client() as c:
            assert [c.get(f"k{i}") for i in range(200)] == [str(i) for i in range(200)]


def test_private_cluster_replica_takes_over_a_killed_master() -> None:
    with PrivateCluster() as cluster:
        before = cluster.masters()
        with cluster.client() as c:
            c.set("{x}k", "v")
            victim = int(c.get_node_from_key("{x}k").port)
        # the replica has the key before its master dies
        with cluster.server(victim).client() as direct:
            assert direct.execute_command("WAIT", 1, 5000) == 1
        cluster.kill_master(before.index(victim))
        after = cluster.wait_failover()
        assert victim not in after and len(after) == 3
        with cluster.client() as c:
            assert c.get("{x}k") == "v"
            c.set("{x}k", "w")


def test_private_sentinel_failover_moves_the_master_and_a_client_finds_it() -> None:
    with PrivateSentinel() as group:
        old = group.current_master()
        with group.client() as c:
            c.set("k", "v")
            assert c.execute_command("WAIT", 1, 5000) == 1  # the replica has it
        new = group.failover()
        assert new != old and group.current_master() == new
        assert group.server(new).info("replication")["role"] == "master"
        with group.client() as c:  # asks the sentinels: talks to the new master
            assert c.get("k") == "v"
            c.set("k", "w")
        with group.server(new).client() as direct:
            assert direct.get("k") == "w"


def test_private_sentinel_promotes_the_replica_when_the_master_is_killed() -> None:
    with PrivateSentinel() as group:
        old = group.current_master()
        new = group.kill_master()
        assert new != old and gone(group.server(old).pid)
        with group.client() as c:
            c.set("k", "after")
            assert c.get("k") == "after"
