#!/usr/bin/env bash
# The load generators the benchmarks need beside PostgreSQL and Redis (scripts/services.sh):
# wrk (bench/api.py) and pgbench (bench/reserve.py, bench/api.py; Debian's postgresql-client).
# Installed from Debian's packages, as root, when missing.
set -euo pipefail

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v pgbench >/dev/null || missing+=(postgresql-client)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "bench_tools: ${missing[*]} missing and installing needs root; install them yourself" >&2
  exit 1
fi
echo "bench_tools: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
command -v wrk >/dev/null && command -v pgbench >/dev/null
