#!/usr/bin/env bash
# The test Redis Cluster and Sentinel group, beside the standalone Redis on 6379 (not ours):
#   cluster:  3 masters + 3 replicas on 127.0.0.1:7100-7105 (cluster bus 17100-17105)
#   sentinel: master 127.0.0.1:7200, replica 7201, sentinels 7210-7212, master name stockctl-test
# Idempotent: when both answer and are healthy it returns at once. A topology that is not
# healthy (stale nodes.conf after a reboot, a dead node, a broken cluster) is stopped, its
# state directory wiped, and created again. State: $STOCKCTL_TOPOLOGY_DIR
# (default /tmp/stockctl-redis-topologies). Tests may fail the sentinel master over to 7201:
# that is healthy too.
set -euo pipefail

STATE=${STOCKCTL_TOPOLOGY_DIR:-/tmp/stockctl-redis-topologies}
HOST=127.0.0.1
CLUSTER_PORTS=(7100 7101 7102 7103 7104 7105)
DATA_PORTS=(7200 7201)
SENTINEL_PORTS=(7210 7211 7212)
MASTER_NAME=stockctl-test
WAIT_SECONDS=30

say() { echo "redis-topologies: $*"; }
die() { echo "redis-topologies: $*" >&2; exit 1; }
cli() { local port=$1; shift; timeout 3 redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null; }
# The value of FIELD in the INFO-style "field:value" lines of a redis-cli answer.
field() { tr -d '\r' | sed -n "s/^$1://p"; }

for tool in redis-server redis-cli flock timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install redis-server)"
done

# -- health checks (fast: a handful of redis-cli calls)

cluster_healthy() {
  local port info
  for port in "${CLUSTER_PORTS[@]}"; do
    info=$(cli "$port" cluster info) || return 1
    [ "$(field cluster_state <<<"$info")" = ok ] || return 1
    [ "$(field cluster_known_nodes <<<"$info")" = 6 ] || return 1
    [ "$(field cluster_size <<<"$info")" = 3 ] || return 1
  done
}

# Every sentinel names the same master, which answers as a master; the other data node
# answers too. (Right after a failover the old master stays a master for ~10 s before the
# sentinels turn it into a replica of the new one: still healthy.)
sentinel_healthy() {
  local port addr first="" master_port
  for port in "${SENTINEL_PORTS[@]}"; do
    addr=$(cli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ') || return 1
    [ -n "$addr" ] || return 1
    [ -z "$first" ] && first=$addr
    [ "$addr" = "$first" ] || return 1
  done
  master_port=$(awk '{print $2}' <<<"$first")
  [ "$(cli "$master_port" info replication | field role)" = master ] || return 1
  answers "${DATA_PORTS[@]}"
}

# -- stopping what a previous run left (only processes on our ports, only redis-server)

# A redis-server serving PORT (its title is "redis-server 127.0.0.1:PORT ..."), not a recycled pid.
is_redis_pid() {
  local pid=$1 port=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^redis-server [^ ]*:$port\b"
}

stop_port() {
  local port=$1 dir=$2 pid=""
  [ -f "$dir/$port.pid" ] && pid=$(cat "$dir/$port.pid")
  # No pid file (a tmp cleaner may have removed it): ask the server on the port for its pid.
  if ! is_redis_pid "$pid" "$port"; then pid=$(cli "$port" info server | field process_id || true); fi
  if is_redis_pid "$pid" "$port"; then
    kill -CONT "$pid" 2>/dev/null || true  # a test may have paused it
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
  fi
  for _ in $(seq 1 50); do port_free "$port" && return 0; sleep 0.1; done
  die "127.0.0.1:$port is taken by something that is not one of our Redis servers"
}

# Not gone and not a zombie (init may be slow to reap a killed daemon).
running() { [ "$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)" != Z ] && [ -d "/proc/$1" ]; }

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_until() {
  local what=$1; shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "redis-topologies: timed out after ${WAIT_SECONDS}s waiting for $what; logs:" >&2
      tail -n 5 "$STATE"/*/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}

# Daemons must not inherit the lock's descriptor (fd 9), or they would hold the lock forever.
start_server() { redis-server "$@" 9>&-; }

answers() { local port; for port in "$@"; do [ "$(cli "$port" ping)" = PONG ] || return 1; done; }

# -- the cluster

cluster_nodes_ok() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    [ "$(cli "$port" cluster info | field cluster_state)" = ok ] || return 1
  done
}

cluster_replicas_synced() {
  local port synced=0
  for port in "${CLUSTER_PORTS[@]}"; do
    [ "$(cli "$port" info replication | field master_link_status)" = up ] && synced=$((synced + 1))
  done
  [ "$synced" = 3 ]
}

create_cluster() {
  local dir="$STATE/cluster" port
  for port in "${CLUSTER_PORTS[@]}"; do stop_port "$port" "$dir"; done
  rm -rf "$dir"
  mkdir -p "$dir"
  for port in "${CLUSTER_PORTS[@]}"; do
    start_server --port "$port" --bind "$HOST" --cluster-enabled yes \
      --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --repl-diskless-sync-delay 0 --daemonize yes --dir "$dir" \
      --pidfile "$dir/$port.pid" --logfile "$dir/$port.log"
  done
  wait_until "the cluster nodes to answer" answers "${CLUSTER_PORTS[@]}"
  local nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do nodes+=("$HOST:$port"); done
  if ! timeout 40 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
    >"$dir/create.log" 2>&1; then
    cat "$dir/create.log" >&2
    die "redis-cli --cluster create failed"
  fi
  wait_until "cluster_state:ok on every node" cluster_nodes_ok
  wait_until "the cluster replicas to sync" cluster_replicas_synced
}

# -- the sentinel group

sentinel_ready() {
  local port master
  for port in "${SENTINEL_PORTS[@]}"; do
    master=$(cli "$port" sentinel master "$MASTER_NAME" | tr '\n' ' ') || return 1
    # a flat "name value name value ..." list
    grep -q ' num-slaves 1 ' <<<" $master " || return 1
    grep -q ' num-other-sentinels 2 ' <<<" $master " || return 1
    grep -q ' flags master ' <<<" $master " || return 1
  done
}

replica_synced() { [ "$(cli 7201 info replication | field master_link_status)" = up ]; }

create_sentinel() {
  local dir="$STATE/sentinel" port
  for port in "${SENTINEL_PORTS[@]}" "${DATA_PORTS[@]}"; do stop_port "$port" "$dir"; done
  rm -rf "$dir"
  mkdir -p "$dir"
  # Config files, not flags: sentinel rewrites its own config and the data nodes' on failover.
  for port in "${DATA_PORTS[@]}"; do
    {
      echo "port $port"
      echo "bind $HOST"
      echo "daemonize yes"
      echo "save \"\""
      echo "appendonly no"
      echo "repl-diskless-sync-delay 0"  # the default waits 5 s before a replica's first sync
      echo "dir \"$dir\""
      echo "dbfilename dump-$port.rdb"
      echo "pidfile \"$dir/$port.pid\""
      echo "logfile \"$dir/$port.log\""
      if [ "$port" = 7201 ]; then echo "replicaof $HOST 7200"; fi
    } >"$dir/redis-$port.conf"
    start_server "$dir/redis-$port.conf"
  done
  wait_until "the sentinel master and replica to answer" answers "${DATA_PORTS[@]}"
  # The replica in sync before the sentinels start: a sentinel finds replicas in the master's
  # INFO, which it reads once at connect and then every 10 s.
  wait_until "the replica 7201 to sync with 7200" replica_synced
  for port in "${SENTINEL_PORTS[@]}"; do
    {
      echo "port $port"
      echo "bind $HOST"
      echo "daemonize yes"
      echo "dir \"$dir\""
      echo "pidfile \"$dir/$port.pid\""
      echo "logfile \"$dir/$port.log\""
      echo "sentinel monitor $MASTER_NAME $HOST 7200 2"
      echo "sentinel down-after-milliseconds $MASTER_NAME 1000"
      echo "sentinel failover-timeout $MASTER_NAME 5000"
      echo "sentinel parallel-syncs $MASTER_NAME 1"
    } >"$dir/sentinel-$port.conf"
    start_server "$dir/sentinel-$port.conf" --sentinel
  done
  wait_until "the sentinels to answer" answers "${SENTINEL_PORTS[@]}"
  wait_until "each sentinel to see the master, its replica and the other sentinels" sentinel_ready
}

mkdir -p "$STATE"
# One run at a time (pytest-xdist workers, two shells): the others wait, then find it healthy.
exec 9>"$STATE/.lock"
flock -w 90 9 || die "another run holds $STATE/.lock"

if cluster_healthy; then
  say "cluster already up on $HOST:7100-7105 (3 masters, 3 replicas)"
else
  start=$SECONDS
  create_cluster
  say "cluster ready on $HOST:7100-7105 (3 masters, 3 replicas) in $((SECONDS - start))s"
fi

if sentinel_healthy; then
  master=$(cli 7210 sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ':')
  say "sentinel group already up: sentinels $HOST:7210-7212, $MASTER_NAME master ${master%:}"
else
  start=$SECONDS
  create_sentinel
  say "sentinel group ready: sentinels $HOST:7210-7212, $MASTER_NAME master $HOST:7200," \
    "replica 7201, in $((SECONDS - start))s"
fi
