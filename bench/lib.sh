# Shared by the benchmark scripts: their setup, tools, free ports, throwaway nginx and
# floodgate instances, and wrk runs summarised as "requests_per_second p99_ms non_2xx".
# Source it from bench/, then call bench_setup.

# Reads THREADS, CONNECTIONS, DURATION, ROUNDS (with defaults); sets root, work (a temporary
# directory), pids (stopped, and work removed, on exit), NGINX and FLOODGATE (this checkout's
# release build, unless FLOODGATE already names a binary: to measure another build).
#
# GENERATOR_CORES=K puts the load generators (wrk, `floodgate loadtest`) on the last K cores
# and nginx and floodgate on the others, as a separate client machine would be; THREADS then
# defaults to K. Sets server_cores, and the command prefixes on_generator and on_servers
# (empty when the cores are shared, the default).
bench_setup() {
  GENERATOR_CORES=${GENERATOR_CORES:-0}
  local cores; cores=$(nproc)
  [[ $GENERATOR_CORES =~ ^[0-9]+$ ]] && [ "$GENERATOR_CORES" -lt "$cores" ] ||
    { echo "GENERATOR_CORES must be a whole number below the $cores cores here" >&2; exit 2; }
  server_cores=$((cores - GENERATOR_CORES))
  on_generator=(); on_servers=()
  if [ "$GENERATOR_CORES" -gt 0 ]; then
    on_generator=(taskset -c "$server_cores-$((cores - 1))")
    on_servers=(taskset -c "0-$((server_cores - 1))")
    THREADS=${THREADS:-$GENERATOR_CORES}
  fi
  THREADS=${THREADS:-2}
  CONNECTIONS=${CONNECTIONS:-64}
  DURATION=${DURATION:-10s}
  ROUNDS=${ROUNDS:-3}
  root=$(cd "$here/.." && pwd)
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
  need_nginx_and_wrk
  if [ -z "${FLOODGATE:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin floodgate
    FLOODGATE="$root/target/release/floodgate"
  fi
}

# Stops what the script started (a PostgreSQL server at once, and waits for it to go, so its
# files can be removed), then removes the work directory.
bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # floodgate drains into its store on SIGTERM: the database must outlive it.
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${pg_pid:-}" ]; then
    kill -QUIT "$pg_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}

# Installs nginx and wrk from Debian if either is missing; sets NGINX to nginx's path.
need_nginx_and_wrk() {
  local missing=0
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing=1
  command -v wrk >/dev/null || missing=1
  if [ "$missing" = 1 ]; then
    echo "installing nginx and wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# nginx's temporary paths under $1, for an http {} block of a throwaway config.
nginx_temp_paths() {
  printf '%s\n' "client_body_temp_path $1/body;" "proxy_temp_path $1/proxy;" \
    "fastcgi_temp_path $1/fastcgi;" "uwsgi_temp_path $1/uwsgi;" "scgi_temp_path $1/scgi;"
}

# Runs wrk against $1 (with the Lua script $2, if given) using THREADS, CONNECTIONS, DURATION.
# Prints "requests_per_second p99_ms non_2xx"; with CPU_OF set to process ids, two more fields:
# the CPU time (user + system) those processes and wrk itself spent per request, in µs. With
# WRK_LOG set to a file, wrk's whole report is appended to it.
run_wrk() {
  local out before ticks=0 wrk_cpu="" timing="$work/wrk-time.$BASHPID" TIMEFORMAT='%U %S'
  if [ -n "${2:-}" ]; then set -- -s "$2" "$1"; else set -- "$1"; fi
  set -- ${on_generator[@]+"${on_generator[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@"
  before=$(cpu_ticks ${CPU_OF:-})
  { time out=$("$@"); } 2> "$timing"
  if [ -n "${CPU_OF:-}" ]; then
    ticks=$(($(cpu_ticks $CPU_OF) - before))
    wrk_cpu=$(<"$timing")
  fi
  rm -f "$timing"
  [ -z "${WRK_LOG:-}" ] || printf '%s\n%s\n' "$*" "$out" >> "$WRK_LOG"
  python3 - "$out" "$ticks" "$(getconf CLK_TCK)" "$wrk_cpu" <<'PY'
import re, sys
out, ticks, ticks_per_second, wrk_cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
p99 = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
fields = [f"{rate:.0f}", f"{p99:.2f}", bad.group(1) if bad else "0"]
if wrk_cpu:
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    fields.append(f"{ticks / ticks_per_second * 1e6 / requests:.1f}")
    fields.append(f"{sum(map(float, wrk_cpu.split())) * 1e6 / requests:.1f}")
print(" ".join(fields))
PY
}

# The median of each column of the lines on standard input (run_wrk's fields, one run a line).
median_fields() {
  python3 -c 'import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
print(" ".join(f"{statistics.median(column):.2f}" for column in zip(*rows)))'
}

# $1 / $2 to three decimals (two would round 0.347 up to a 0.35 target).
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'
}

# The CPU time (user + system, in clock ticks) the processes $@ have used so far; 0 for none.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}

# Process $1 and its children (nginx's master and workers).
with_children() {
  echo "$1" $(pgrep -P "$1")
}

# Starts nginx in directory $1 on a free port, one worker per server core, answering every request
# with a fixed 200 and the JSON body $2; sets nginx_port and adds its pid to pids.
start_fixed_nginx() {
  nginx_port=$(free_port)
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<CONF
worker_processes $server_cores;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $(nginx_temp_paths "$1")
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    location / { default_type application/json; return 200 '$2'; }
  }
}
CONF
  ${on_servers[@]+"${on_servers[@]}"} "$NGINX" -c "$1/nginx.conf" -p "$1" &
  pids+=($!)
}

# Starts floodgate on loopback port 0 with its store in $work/store and the extra TOML $1
# (optional) appended to its config; sets public and admin as launch_floodgate does.
start_floodgate() {
  cat > "$work/floodgate.toml" <<CONF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[store]
path = "$work/store"
${1:-}
CONF
  launch_floodgate "$work/floodgate.toml" "$work/floodgate.out"
}

# Starts a throwaway PostgreSQL cluster in $work/pg on a free loopback port (initdb and pg_ctl
# from Debian's postgresql package; as the postgres user when run as root, since PostgreSQL
# refuses root); sets pg_url, pg_bin (its programs' directory), and pg_pid for bench_cleanup.
start_postgres() {
  local bin as=()
  bin=$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -n 1)")")
  pg_port=$(free_port)
  mkdir -p "$work/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; chmod o+rx "$work"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -D "$work/pg/data" --auth=trust --username=postgres --encoding=UTF8 >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
  pg_pid=$(head -n 1 "$work/pg/data/postmaster.pid")
  pg_bin=$bin
  pg_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
}

# Writes to $1 a wrk script in which every request is a new shopper with a new key: no replays,
# every order a durable write. Concurrent wrk processes need distinct BENCH_PREFIX values.
# Keys count up per wrk thread, so a commit's keys sit side by side in the store's key index;
# KEYS=random makes them random, as UUIDs from real clients are (one index page per order).
# The request is joined from parts made once, not through wrk.format's header table: the client
# shares the cores with the server, and every microsecond it spends is one the server loses.
write_orders_lua() {
  cat > "$1" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args)
  prefix = (os.getenv("BENCH_PREFIX") or "") .. "t" .. tid .. "-" .. os.time() .. "-"
  random_keys = os.getenv("KEYS") == "random"
  math.randomseed(os.time() + tid)
  counter = 0
  head = "POST /api/drops/bench/orders HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
    "\r\nContent-Type: application/json\r\nIdempotency-Key: "
end
request = function()
  counter = counter + 1
  local id = prefix .. (random_keys and string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)) or counter)
  local body = '{"customer":"' .. id .. '","sku":"unit","quantity":1}'
  return head .. id .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end
LUA
}

# The bench drop: one SKU with stock no run sells out, one unit per customer.
BENCH_DROP='{
  "name": "Bench drop", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z",
  "limit_per_customer": 1, "skus": [{"sku": "unit", "name": "Unit", "price_cents": 1, "stock": 4000000000}]}'

# Creates or replaces drop $1 with the JSON definition $2 through the admin API.
put_drop() {
  curl -sf -X PUT -H 'Authorization: Bearer bench' "$admin/admin/drops/$1" -d "$2" >/dev/null
}

# Starts "$FLOODGATE serve --config $1" with its announcements in $2 and admin token "bench",
# under the command in the array `wrap` if the script set one (valgrind, say); sets public and
# admin to its listeners' URLs and adds its pid to pids.
launch_floodgate() {
  FLOODGATE_ADMIN_TOKEN=bench RUST_LOG=error ${on_servers[@]+"${on_servers[@]}"} ${wrap[@]+"${wrap[@]}"} "$FLOODGATE" serve \
    --config "$1" > "$2" &
  pids+=($!)
  # Long enough for a start under valgrind; a plain start announces within milliseconds.
  for _ in $(seq 600); do grep -q '^floodgate admin ' "$2" 2>/dev/null && break; sleep 0.1; done
  public=$(sed -n 's/^floodgate public //p' "$2")
  admin=$(sed -n 's/^floodgate admin //p' "$2")
}

# Runs `floodgate loadtest` on scenario $1 against $2; prints the run's directory.
loadtest() {
  local dir
  ${on_generator[@]+"${on_generator[@]}"} "$FLOODGATE" loadtest "$1" --target "$2" --runs-dir "$work/runs" --quiet > "$work/summary.md" 2> "$work/loadtest.err" || true
  dir=$(sed -n 's/^run stored in //p' "$work/loadtest.err")
  [ -n "$dir" ] || { cat "$work/loadtest.err" >&2; exit 1; }
  echo "$dir"
}

# Runs `floodgate loadtest` at a constant $1 arrivals/s for DURATION against $2 (a base URL),
# each arrival one GET of the path $3, over at most CONNECTIONS connections from
# GENERATOR_THREADS lanes (default: as many as wrk's THREADS). Open-model, so both targets of
# a comparison get the same load whatever their speed, unlike wrk's closed loop. Prints
# "kept_up answers_per_second p99_ms": kept_up is 1 when the generator kept its schedule and
# the answers kept pace with the arrivals; the p99 counts from each request's intended start,
# so a stall is not hidden by the requests it holds back. The first and last seconds are left
# out (connections opening, the drain).
paced_run() {
  local dir seconds=${DURATION%s}
  cat > "$work/paced.toml" <<TOML
name = "paced"
[arrivals]
shape = "constant"
rate = $1
duration_s = $seconds
[http]
max_connections = $CONNECTIONS
[generator]
drain_s = 10
threads = ${GENERATOR_THREADS:-$THREADS}
[[journeys]]
name = "fixed"
[[journeys.steps]]
name = "get"
get = "$3"
TOML
  dir=$(loadtest "$work/paced.toml" "$2")
  python3 - "$dir/run.json" "$seconds" "$1" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
seconds, offered = int(sys.argv[2]), int(sys.argv[3])
window = [s for s in record["timeline"] if 1 <= s["second"] < seconds - 1]
answers = sum(sum(s["statuses"].values()) for s in window)
pairs = sorted((v, c) for s in window for v, c in s["steps"].get("fixed/get", {}).get("response", []))
total, seen, p99 = sum(c for _, c in pairs), 0, 0.0
for v, c in pairs:
    seen += c
    if seen >= 0.99 * total:
        p99 = v / 1000
        break
achieved = answers / len(window)
# A target that falls behind turns an open-model run into a closed loop over the connections.
kept_up = not record["generator"]["invalid"] and achieved >= 0.98 * offered
print(int(kept_up), round(achieved), f"{p99:.2f}")
PY
}
