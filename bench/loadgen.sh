#!/usr/bin/env bash
# The load generator against wrk, and its memory with 300,000 shoppers.
#
#   bash bench/loadgen.sh                # defaults: 2 threads, 64 connections, 10 s, 3 rounds
#   SHOPPERS=300000 bash bench/loadgen.sh
#   PART=rate bash bench/loadgen.sh      # only the rate comparison (PART=memory: only memory)
#   GENERATOR_THREADS=1 bash bench/loadgen.sh   # the generator's lanes (threads; default 2)
#
# 1. Rate: nginx serves a fixed 200. Each round, wrk runs closed-loop as fast as it can with
#    CONNECTIONS connections; then `floodgate loadtest` runs constant-rate scenarios with the
#    same connection limit, from 95 % of wrk's rate down in steps of 5 %, until a run keeps up:
#    it is valid (the generator kept its schedule) and answered at least 98 % of the offered
#    rate; then one run halfway to the step above, which counts if it keeps up too. A round's
#    figure is that run's answers per second against the round's wrk rate; the result is the
#    median of the rounds' figures (target >= 0.8), printed beside the ratio of the medians.
# 2. Memory: floodgate serves a drop whose waiting room admits few, and `floodgate loadtest`
#    sends SHOPPERS shoppers within 30 s to join and wait (polling, giving up after 90 s, so all
#    are alive at once); the figure is the generator's peak resident memory (target: 300,000
#    shoppers in under 2 GB). The box cannot answer every poll on time, so this run is invalid
#    as a measurement of the gateway; it measures the generator's memory only.
# Only loopback addresses are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup
PART=${PART:-all}
SHOPPERS=${SHOPPERS:-300000}

# One constant-rate run of $1 arrivals/s against nginx; sets kept_up, achieved and p99_lt.
constant_run() {
  local offered=$1
  read -r kept_up achieved p99_lt < <(paced_run "$offered" "http://127.0.0.1:$nginx_port" /)
  echo "round $round   loadtest offered $offered/s: $achieved answers/s, kept up=$kept_up, p99 from intended start $p99_lt ms"
}

if [ "$PART" = all ] || [ "$PART" = rate ]; then
  start_fixed_nginx "$work/nginx" 'ok'
  sleep 0.5
  echo "threads=$THREADS connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS cores=$(nproc)"
  wrk_rates=(); lt_rates=()
  for round in $(seq "$ROUNDS"); do
    read -r rate p99 _ < <(run_wrk "http://127.0.0.1:$nginx_port/")
    wrk_rates+=("$rate")
    got=0 above=1.00
    # The highest constant rate, stepping down from wrk's, that the run keeps up with; then
    # halfway to the step above, so the figure is not rounded down by up to a step.
    for share in 0.95 0.90 0.85 0.80 0.75 0.70 0.65 0.60 0.50; do
      constant_run "$(python3 -c "print(round($rate * $share))")"
      if [ "$kept_up" = 1 ]; then got=$achieved; break; fi
      above=$share
    done
    if [ "$got" != 0 ]; then
      constant_run "$(python3 -c "print(round($rate * ($share + $above) / 2))")"
      if [ "$kept_up" = 1 ] && [ "$achieved" -gt "$got" ]; then got=$achieved; fi
    fi
    lt_rates+=("$got")
    echo "round $round wrk: $rate req/s (p99 $p99 ms) · floodgate loadtest, highest constant rate kept up: $got answers/s"
  done
  python3 - "${wrk_rates[*]}" "${lt_rates[*]}" <<'PY'
import statistics, sys
wrk, lt = ([float(x) for x in arg.split()] for arg in sys.argv[1:3])
w, l = statistics.median(wrk), statistics.median(lt)
# Each round's pair ran back to back, so its ratio holds the machine's moment constant; the
# ratio of the two medians can pair a fast moment of one with a slow moment of the other.
paired = statistics.median(b / a for a, b in zip(wrk, lt))
print(f"median wrk {w:.0f} req/s, floodgate loadtest {l:.0f} answers/s (ratio of medians {l / w:.2f});"
      f" median of the rounds' ratios {paired:.2f} (target >= 0.8)")
PY
fi

if [ "$PART" = all ] || [ "$PART" = memory ]; then
  start_floodgate
  put_drop crowd '{
    "name": "Crowd", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z",
    "limit_per_customer": 1, "skus": [{"sku": "unit", "name": "Unit", "price_cents": 1, "stock": 1000000}],
    "waiting_room": {"enabled": true, "max_active": 100, "prequeue_s": 0, "pass_ttl_s": 600}}'
  cat > "$work/crowd.toml" <<TOML
name = "loadgen-crowd"
[arrivals]
shape = "pulse"
shoppers = $SHOPPERS
jitter_s = 30
[http]
max_connections = 256
timeout_ms = 30000
[generator]
drain_s = 0
[values]
drop = "crowd"
[[journeys]]
name = "waiter"
[[journeys.steps]]
name = "queue"
queue = "poll"
give_up_after_s = 90
TOML
  dir=$(loadtest "$work/crowd.toml" "$public")
  python3 - "$dir/run.json" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
g = record["generator"]
peak_waiting = max(s["waiting"] for s in record["timeline"])
peak_alive = max(s["in_flight"] for s in record["timeline"])
print(f"{g['started']} shoppers started, at most {peak_alive} alive and {peak_waiting} waiting at once;"
      f" generator peak RSS {g['peak_rss_bytes'] / 2**20:.0f} MiB (target < 2048 MiB)")
if g["invalid"]:
    print("run marked invalid (expected when the box cannot serve every poll on time):", "; ".join(g["invalid"]))
PY
fi
