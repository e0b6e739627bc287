#!/usr/bin/env bash
# The waiting room over HTTP against nginx serving a fixed 200, in one run with the same client
# (wrk), connections and duration: joins (every request a new shopper) and status polls.
#
#   bash bench/waiting_room.sh           # defaults: 2 threads, 64 connections, 10 s, 3 rounds
#
# Prints the medians and the ratios to nginx. Only loopback addresses are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup

start_fixed_nginx "$work/nginx" '{"state":"waiting","position":1}'

start_floodgate '[waiting_room]
secret = "bench secret"
abandon_after_s = 3600'
# A room of 100 passes: almost every joiner queues, as in a surge.
put_drop bench '{
  "name": "Bench drop", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z",
  "limit_per_customer": 1, "skus": [{"sku": "unit", "name": "Unit", "price_cents": 1, "stock": 1000000}],
  "waiting_room": {"enabled": true, "max_active": 100, "prequeue_s": 0, "pass_ttl_s": 3600}}'
for customer in $(seq 101); do
  curl -sf -X POST "$public/api/drops/bench/queue" -d "{\"customer\":\"warm-$customer\"}" > "$work/last.json"
done
ticket=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ticket"])' "$work/last.json")

cat > "$work/joins.lua" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) prefix = "t" .. tid .. "-" .. os.time() .. "-" ; counter = 0 end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/drops/bench/queue", {["Content-Type"] = "application/json"},
    '{"customer":"' .. prefix .. counter .. '"}')
end
LUA

echo "threads=$THREADS connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS cores=$(nproc)"
nginx=(); joins=(); polls=()
for round in $(seq "$ROUNDS"); do
  read -r rate p99 bad < <(run_wrk "http://127.0.0.1:$nginx_port/")
  nginx+=("$rate"); echo "round $round nginx fixed 200:  $rate req/s  p99 ${p99} ms  non-2xx $bad"
  read -r rate p99 bad < <(run_wrk "$public/api/drops/bench/queue" "$work/joins.lua")
  joins+=("$rate"); echo "round $round floodgate joins:   $rate req/s  p99 ${p99} ms  non-2xx $bad"
  read -r rate p99 bad < <(run_wrk "$public/api/queue/$ticket")
  polls+=("$rate"); echo "round $round floodgate polls:   $rate req/s  p99 ${p99} ms  non-2xx $bad"
done
python3 - "${nginx[*]}" "${joins[*]}" "${polls[*]}" <<'PY'
import statistics, sys
nginx, joins, polls = (statistics.median(float(x) for x in arg.split()) for arg in sys.argv[1:4])
print(f"median nginx {nginx:.0f} req/s | joins {joins:.0f}/s = {joins / nginx:.2f} x nginx | "
      f"polls {polls:.0f}/s = {polls / nginx:.2f} x nginx")
PY
