#!/usr/bin/env bash
# Durable order intake over HTTP against nginx serving a fixed 200, measured in one run with the
# same client (wrk), the same connections and the same duration.
#
#   bash bench/intake.sh                 # defaults: 2 threads, 64 connections, 10 s, 3 rounds
#   THREADS=2 CONNECTIONS=128 DURATION=15s ROUNDS=5 bash bench/intake.sh
#   STORE=postgres bash bench/intake.sh  # the same on a throwaway PostgreSQL cluster
#
# Prints each round and the median rates, p99s and the ratio floodgate/nginx
# (target: >= 0.35, floodgate p99 < 20 ms), and the store's transactions per accepted order
# (from /metrics). Only loopback addresses are used.
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
nginx_rates=(); fg_rates=(); nginx_p99=(); fg_p99=()
for round in $(seq "$ROUNDS"); do
  read -r rate p99 bad < <(run_wrk "http://127.0.0.1:$nginx_port/")
  nginx_rates+=("$rate"); nginx_p99+=("$p99")
  echo "round $round nginx fixed 200:      $rate req/s  p99 ${p99} ms  non-2xx $bad"
  read -r rate p99 bad < <(run_wrk "$public/api/drops/bench/orders" "$work/orders.lua")
  fg_rates+=("$rate"); fg_p99+=("$p99")
  echo "round $round floodgate intake:     $rate req/s  p99 ${p99} ms  non-2xx $bad"
done
held=$(curl -sf -H 'Authorization: Bearer bench' "$admin/admin/drops/bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["skus"][0]["held"])')
commits=$(curl -sf -H 'Authorization: Bearer bench' "$admin/metrics" | sed -n 's/^floodgate_store_commits_total //p')
python3 - "${nginx_rates[*]}" "${fg_rates[*]}" "${nginx_p99[*]}" "${fg_p99[*]}" "$held" "$commits" "${STORE:-sqlite}" <<'PY'
import statistics, sys
nginx, fg, nginx_p99, fg_p99 = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
n, f = statistics.median(nginx), statistics.median(fg)
print(f"median nginx {n:.0f} req/s (p99 {statistics.median(nginx_p99):.2f} ms)")
print(f"median floodgate durable intake {f:.0f} orders/s (p99 {statistics.median(fg_p99):.2f} ms)")
print(f"ratio floodgate/nginx {f / n:.2f} (target >= 0.35)")
print(f"orders durably stored during the run: {sys.argv[5]}")
print(f"{sys.argv[7]} transactions per accepted order: {float(sys.argv[6]) / max(1, int(sys.argv[5])):.4f}")
PY
