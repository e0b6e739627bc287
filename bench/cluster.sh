#!/usr/bin/env bash
# Durable order intake over HTTP with 1, 2 and 3 floodgate nodes on one PostgreSQL, against one
# node on the embedded SQLite store, under the same load (wrk, the same connections in all),
# measured in one run on this machine; and PostgreSQL transactions per accepted order.
#
#   bash bench/cluster.sh                       # 64 connections, 10 s, 3 rounds per setup
#   CONNECTIONS=96 DURATION=15s ROUNDS=5 bash bench/cluster.sh
#
# Several nodes split the connections evenly (one wrk per node, started together); a setup's
# rate is their sum. Transactions are PostgreSQL's own count (pg_stat_database.xact_commit),
# reads included, over each round. Only loopback addresses are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup
start_postgres
write_orders_lua "$work/orders.lua"

psql_at() { "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -At "$@"; }

# Starts $2 nodes on database $1 (none: the embedded store); sets node_public and node_pids.
start_nodes() {
  node_public=(); node_pids=()
  for i in $(seq "$2"); do
    mkdir -p "$work/$1-$i"
    printf '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n[store]\npath = "%s"\n' \
      "$work/$1-$i/store" > "$work/$1-$i/floodgate.toml"
    if [ "$1" = sqlite ]; then unset FLOODGATE_STORE_URL
    else export FLOODGATE_STORE_URL="postgres://postgres@127.0.0.1:$pg_port/$1"; fi
    launch_floodgate "$work/$1-$i/floodgate.toml" "$work/$1-$i/out"
    node_public+=("$public"); node_pids+=("${pids[-1]}")
    [ "$i" = 1 ] && put_drop bench "$BENCH_DROP"
  done
  sleep 2 # every node has read the drop (nodes look for new drops once a second)
}

stop_nodes() {
  for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

xacts() { sleep 1; psql_at -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }

# One round on the running nodes: "rate p99_max orders transactions".
round() {
  local db=$1 n=${#node_public[@]} before_x before_o after_x after_o outs=() rate=0 p99=0
  if [ "$db" != sqlite ]; then before_x=$(xacts "$db"); before_o=$(psql_at -d "$db" -c "SELECT COUNT(*) FROM orders"); fi
  local per=$((CONNECTIONS / n)) threads=$(( THREADS / n > 0 ? THREADS / n : 1 ))
  for i in $(seq 0 $((n - 1))); do
    outs+=("$work/wrk-$i")
    ( BENCH_PREFIX="r$RANDOM-n$i-" THREADS=$threads CONNECTIONS=$per run_wrk "${node_public[$i]}/api/drops/bench/orders" "$work/orders.lua" > "$work/wrk-$i" ) &
  done
  wait $(jobs -p | tail -n "$n")
  read -r rate p99 < <(cat "${outs[@]}" | awk '{ r += $1; if ($2 > p) p = $2 } END { printf "%.0f %.2f\n", r, p }')
  if [ "$db" = sqlite ]; then echo "$rate $p99 - -"; return; fi
  after_x=$(xacts "$db"); after_o=$(psql_at -d "$db" -c "SELECT COUNT(*) FROM orders")
  echo "$rate $p99 $((after_o - before_o)) $((after_x - before_x))"
}

echo "connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS cores=$(nproc)"
results=()
for setup in sqlite:1 postgres:1 postgres:2 postgres:3; do
  kind=${setup%:*}; n=${setup#*:}
  db=sqlite
  if [ "$kind" = postgres ]; then db="nodes$n"; psql_at -d postgres -c "CREATE DATABASE $db" >/dev/null; fi
  start_nodes "$db" "$n"
  for r in $(seq "$ROUNDS"); do
    read -r rate p99 orders txns < <(round "$db")
    echo "round $r $kind x$n: $rate orders/s  worst p99 ${p99} ms  orders $orders  transactions $txns"
    results+=("$kind:$n $rate $p99 $orders $txns")
  done
  stop_nodes
done
python3 - "${results[@]}" <<'PY'
import statistics, sys
rows = {}
for line in sys.argv[1:]:
    setup, rate, p99, orders, txns = line.split()
    rows.setdefault(setup, []).append((float(rate), float(p99), orders, txns))
base = statistics.median(r[0] for r in rows["sqlite:1"])
for setup, runs in rows.items():
    rate = statistics.median(r[0] for r in runs)
    p99 = statistics.median(r[1] for r in runs)
    line = f"{setup:11} median {rate:7.0f} orders/s  p99 {p99:7.2f} ms  ratio to one SQLite node {rate / base:.2f}"
    if runs[0][2] != "-":
        per = statistics.median(int(r[3]) / max(1, int(r[2])) for r in runs)
        line += f"  PostgreSQL transactions per accepted order {per:.4f}"
    print(line)
PY
