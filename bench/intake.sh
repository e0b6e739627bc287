#!/usr/bin/env bash
# Durable order intake over HTTP against nginx serving a fixed 200, measured in one run with the
# same client (wrk), the same connections and the same duration.
#
#   bash bench/intake.sh                 # defaults: 2 threads, 64 connections, 10 s, 3 rounds
#   THREADS=2 CONNECTIONS=128 DURATION=15s ROUNDS=5 bash bench/intake.sh
#   STORE=postgres bash bench/intake.sh  # the same on a throwaway PostgreSQL cluster
#   KEYS=random bash bench/intake.sh     # random idempotency keys (as UUIDs), not counting ones
#
# Prints each round and the median rates, p99s and the ratio floodgate/nginx
# (target: >= 0.35, floodgate p99 < 20 ms), and the store's transactions per accepted order
# (from /metrics). Beside them, floodgate's /healthz (its HTTP path alone, for reference) and
# the CPU each server and wrk spent per request (/proc and bash's `time`): on a shared 2-core
# machine the ratio is mostly a ratio of those. Only loopback addresses are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup

# nginx: a fixed 200 with a small JSON body, as many workers as floodgate has cores.
start_fixed_nginx "$work/nginx" '{"order_id":"ord_0","state":"accepted"}'

# floodgate on port 0 with its own store, announcing its addresses on stdout.
if [ "${STORE:-sqlite}" = postgres ]; then
  start_postgres
  export FLOODGATE_STORE_URL=$pg_url
fi
start_floodgate
put_drop bench "$BENCH_DROP"
write_orders_lua "$work/orders.lua"

echo "threads=$THREADS connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS cores=$(nproc)"
nginx_procs=$(with_children "${pids[0]}")
floodgate_proc=${pids[-1]}
nginx=(); health=(); intake=()
report() { # label, run_wrk's fields
  read -r rate p99 bad server client <<< "$2"
  printf '%-32s %6.0f req/s  p99 %6.2f ms  non-2xx %s  cpu/request: server %s µs, wrk %s µs\n' \
    "$1" "$rate" "$p99" "$bad" "$server" "$client"
}
for round in $(seq "$ROUNDS"); do
  nginx+=("$(CPU_OF=$nginx_procs run_wrk "http://127.0.0.1:$nginx_port/")")
  report "round $round nginx fixed 200" "${nginx[-1]}"
  health+=("$(CPU_OF=$floodgate_proc run_wrk "$public/healthz")")
  report "round $round floodgate /healthz" "${health[-1]}"
  intake+=("$(CPU_OF=$floodgate_proc run_wrk "$public/api/drops/bench/orders" "$work/orders.lua")")
  report "round $round floodgate intake" "${intake[-1]}"
done
nginx_median=$(printf '%s\n' "${nginx[@]}" | median_fields)
health_median=$(printf '%s\n' "${health[@]}" | median_fields)
intake_median=$(printf '%s\n' "${intake[@]}" | median_fields)
report "median nginx fixed 200" "$nginx_median"
report "median floodgate /healthz" "$health_median"
report "median floodgate durable intake" "$intake_median"
echo "ratio floodgate intake/nginx $(ratio "${intake_median%% *}" "${nginx_median%% *}") (target >= 0.35, p99 < 20 ms);" \
  "/healthz/nginx $(ratio "${health_median%% *}" "${nginx_median%% *}")"
held=$(curl -sf -H 'Authorization: Bearer bench' "$admin/admin/drops/bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["skus"][0]["held"])')
commits=$(curl -sf -H 'Authorization: Bearer bench' "$admin/metrics" | sed -n 's/^floodgate_store_commits_total //p')
echo "orders durably stored during the run: $held"
echo "${STORE:-sqlite} transactions per accepted order: $(awk -v c="$commits" -v h="$held" 'BEGIN { printf "%.4f", c / (h > 0 ? h : 1) }')"
