#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: exact to a fraction of a percent
# where this shared machine's rates swing by a quarter, so two builds compare in one run each.
# floodgate runs under valgrind with one connection loop; wrk (1 thread, 8 connections) warms
# it up, the counters are zeroed, then DURATION of load is counted.
#
#   bash bench/instructions.sh                          # this checkout's release build
#   FLOODGATE=/path/to/floodgate bash bench/instructions.sh   # another build, to compare
#
# Prints instructions per /healthz request (the HTTP path alone), per durable order, and per
# request proxied to an origin (nginx answering a fixed page). Not counted: the kernel
# (loopback TCP, fsync), nginx. Valgrind's CPU lacks some extensions (SHA-NI), so
# sha2 takes its software path there. Installs valgrind if missing; only loopback is used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
DURATION=${DURATION:-10s}
bench_setup
if ! command -v valgrind >/dev/null; then
  echo "installing valgrind" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
write_orders_lua "$work/orders.lua"
start_fixed_nginx "$work/origin" '{"product":"muskie-rod","in_stock":500}'

# Counts one target: "healthz", "intake" or "proxied".
count() {
  local run="$work/$1"
  mkdir -p "$run"
  cat > "$run/floodgate.toml" <<CONF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
worker_threads = 1
[store]
path = "$run/store"
[origin]
url = "http://127.0.0.1:$nginx_port"
CONF
  local wrap=(valgrind --tool=callgrind --log-file="$run/valgrind.log"
    --callgrind-out-file="$run/callgrind.out")
  launch_floodgate "$run/floodgate.toml" "$run/out"
  local pid=${pids[-1]}
  put_drop bench "$BENCH_DROP"
  wrk -t1 -c8 -d3s "$public/healthz" > /dev/null
  callgrind_control --zero "$pid" > /dev/null 2>&1
  local out
  case $1 in
    healthz) out=$(wrk -t1 -c8 -d"$DURATION" "$public/healthz") ;;
    intake) out=$(wrk -t1 -c8 -d"$DURATION" -s "$work/orders.lua" "$public/api/drops/bench/orders") ;;
    proxied) out=$(wrk -t1 -c8 -d"$DURATION" "$public/shop/rods/muskie") ;;
  esac
  callgrind_control --dump "$pid" > /dev/null 2>&1
  kill "$pid"; wait "$pid" || true
  local requests instructions
  requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<< "$out")
  # The dump holds the counted load; the file written at exit, only the shutdown.
  instructions=$(callgrind_annotate "$run/callgrind.out.1" 2>/dev/null |
    sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  printf '%-8s %6d requests counted, %7.0f instructions per request\n' "$1" "$requests" \
    "$(awk -v i="$instructions" -v r="$requests" 'BEGIN { print i / r }')"
}

echo "binary: $FLOODGATE"
count healthz
count intake
count proxied
