#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer for the tests:
# start them if installed, install them from Debian's packages (as root) if not. Then start the
# test Redis Cluster and Sentinel group (scripts/redis_topologies.sh).
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do up "$port" && return 0; sleep 0.5; done
  echo "services: $name did not come up on 127.0.0.1:$port" >&2
  return 1
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "services: $1 is not reachable and installing it needs root; start it yourself" >&2
    exit 1
  fi
}

apt_install() {
  need_root "$1"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  up 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "services: installing PostgreSQL"
    apt_install postgresql
  fi
  need_root PostgreSQL
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres over TCP without a password, as on the project's machines.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  echo "services: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 5432 PostgreSQL
}

ensure_redis() {
  up 6379 && return 0
  if ! command -v redis-server >/dev/null; then
    echo "services: installing Redis"
    apt_install redis-server
  fi
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/stockctl-tests.log
  wait_for 6379 Redis
}

ensure_redis_topologies() {
  # The test Redis Cluster (7100-7105) and Sentinel group (7200, 7201; sentinels 7210-7212),
  # beside the standalone Redis. Redis may answer on 6379 without redis-server installed here.
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "services: installing Redis (for the test cluster and sentinels)"
    apt_install redis-server
  fi
  "$(dirname "$0")/redis_topologies.sh"
}

ensure_promtool() {
  # The tests check config/prometheus/alerts.yml with promtool (Debian package prometheus).
  command -v promtool >/dev/null && return 0
  echo "services: installing promtool (Debian package prometheus)"
  apt_install prometheus
  command -v promtool >/dev/null
}

ensure_postgres
ensure_redis
ensure_redis_topologies
ensure_promtool
echo "services: PostgreSQL, Redis (standalone, cluster, sentinel) and promtool are ready"
