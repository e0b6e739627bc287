#!/usr/bin/env bash
# Reverse proxying to one origin (nginx serving a small fixed page): the same wrk load through
# (a) nginx as a reverse proxy and (b) floodgate, each with the same number of worker threads
# (1, then 2), measured in one run; then the same with caching on (nginx proxy_cache hits vs
# floodgate edge-cache hits). After each closed-loop comparison, the p99 of both at one offered
# rate (open-model, from `floodgate loadtest`): PACED_SHARE (default 0.5) of the slower one's
# closed-loop rate. wrk's closed loop offers a faster proxy more load, and once wrk's own
# threads are the bottleneck (as with cache hits) its p99 is theirs waiting for a core; at one
# rate the tails compare the proxies.
#
#   bash bench/proxy.sh                  # defaults: wrk 2 threads, 64 connections, 10 s, 3 rounds
#   CONNECTIONS=128 DURATION=15s ROUNDS=5 bash bench/proxy.sh
#   WRK_LOG=/tmp/wrk.log bash bench/proxy.sh   # also keeps each wrk report (latency percentiles)
#   REFERENCE=bare bash bench/proxy.sh   # nginx passing requests on without forwarding headers
#   GENERATOR_CORES=1 bash bench/proxy.sh  # wrk and the paced generator on a core of their own
#
# With the cores shared (the default), a closed-loop p99 is mostly the kernel's: more threads
# want the cores than there are, and where it places wrk's threads beside the proxy's decides
# whether requests wait out 4 ms scheduler ticks. GENERATOR_CORES keeps the generator off the
# proxy's cores, as a client machine would; worker counts above the cores left are skipped.
#
# Prints medians of requests/s and p99 and the ratios floodgate/nginx (targets: throughput
# >= 1.0, p99 <= 1.0), the CPU each proxy spent per request (/proc), and the paced p99s and
# their ratio. Only loopback addresses are used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup
PACED_SHARE=${PACED_SHARE:-0.5}
page=/shop/rods/muskie

start_nginx() { # name workers server-block
  local dir="$work/$1"
  mkdir -p "$dir/cache"
  # Run as root, nginx's workers drop to an unprivileged user: let them into the cache.
  chmod 755 "$work" && chmod -R a+rwx "$dir"
  cat > "$dir/nginx.conf" <<CONF
worker_processes $2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $(nginx_temp_paths "$dir")
  keepalive_requests 1000000;
  proxy_cache_path $dir/cache keys_zone=pages:10m max_size=64m;
  $3
}
CONF
  ${on_servers[@]+"${on_servers[@]}"} "$NGINX" -c "$dir/nginx.conf" -p "$dir" &
  pids+=($!)
}

# The origin: one worker, a small page that may be cached for a minute.
origin_port=$(free_port)
start_nginx origin 1 "server { listen 127.0.0.1:$origin_port;
  location / { default_type text/html; add_header Cache-Control 'public, max-age=60';
    return 200 '<!doctype html><title>Muskie rod</title><p>In stock: 500 units.</p>'; } }"

# What floodgate adds to every proxied request and answer, as an nginx reverse proxy is
# configured to add it: the client's address, scheme and host, a request id (the same 32 hex
# digits) and Via. Without them the reference would do less than the issue asks of floodgate,
# and the origin would parse fewer headers behind it. REFERENCE=bare leaves them out.
forwarded_headers() {
  [ "${REFERENCE:-}" = bare ] && return
  printf '%s ' 'proxy_set_header Host $http_host;' 'proxy_set_header X-Request-Id $request_id;' \
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;' \
    'proxy_set_header X-Forwarded-Proto $scheme;' 'proxy_set_header X-Forwarded-Host $http_host;' \
    "proxy_set_header Via '1.1 nginx';" 'add_header X-Request-Id $request_id;' \
    "add_header Via '1.1 nginx';"
}

start_proxy_nginx() { # workers cache(on|off); sets nginx_base
  local port; port=$(free_port)
  local cache=""
  [ "$2" = on ] && cache="proxy_cache pages; proxy_cache_valid 200 60s;"
  start_nginx "nginx-$1-$2" "$1" "upstream origin { server 127.0.0.1:$origin_port; keepalive 256; }
  server { listen 127.0.0.1:$port;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection '';
      $(forwarded_headers) $cache } }"
  nginx_base="http://127.0.0.1:$port"
}

start_floodgate() { # workers cache(on|off); sets floodgate_base
  local dir="$work/floodgate-$1-$2"
  mkdir -p "$dir"
  local route=""
  [ "$2" = on ] && route=$'[[routes]]\npath = "/**"\ncache = {}\n'
  cat > "$dir/floodgate.toml" <<CONF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
worker_threads = $1
[store]
path = "$dir/store"
[origin]
url = "http://127.0.0.1:$origin_port"
max_concurrency = 4096
$route
CONF
  launch_floodgate "$dir/floodgate.toml" "$dir/out"
  floodgate_base=$public
}


echo "wrk threads=$THREADS connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS cores=$(nproc) generator cores=$GENERATOR_CORES reference=${REFERENCE:-forwarding}"
summary=()
for cache in off on; do
  for workers in 1 2; do
    if [ "$workers" -gt "$server_cores" ]; then
      summary+=("cache=$cache workers=$workers: left out, more workers than the $server_cores server cores")
      continue
    fi
    start_proxy_nginx "$workers" "$cache"
    start_floodgate "$workers" "$cache"
    sleep 0.5
    nginx_url=$nginx_base$page floodgate_url=$floodgate_base$page
    curl -sf -o /dev/null "$nginx_url" && curl -sf -o /dev/null "$floodgate_url"
    [ "${REFERENCE:-}" = bare ] || curl -sfI "$nginx_url" | grep -qi '^x-request-id:' ||
      { echo "nginx's answer lacks the forwarding headers" >&2; exit 1; }
    nginx_procs=$(with_children "${pids[-2]}")
    n_runs=(); f_runs=()
    for round in $(seq "$ROUNDS"); do
      n_runs+=("$(CPU_OF=$nginx_procs run_wrk "$nginx_url")")
      read -r rate p99 bad cpu _ <<< "${n_runs[-1]}"
      echo "cache=$cache workers=$workers round $round nginx:     $rate req/s  p99 ${p99} ms  non-2xx $bad  cpu/request $cpu µs"
      f_runs+=("$(CPU_OF=${pids[-1]} run_wrk "$floodgate_url")")
      read -r rate p99 bad cpu _ <<< "${f_runs[-1]}"
      echo "cache=$cache workers=$workers round $round floodgate: $rate req/s  p99 ${p99} ms  non-2xx $bad  cpu/request $cpu µs"
    done
    read -r n n99 _ ncpu _ < <(printf '%s\n' "${n_runs[@]}" | median_fields)
    read -r f f99 _ fcpu _ < <(printf '%s\n' "${f_runs[@]}" | median_fields)
    summary+=("cache=$cache workers=$workers: nginx ${n%.*} req/s p99 $n99 ms cpu $ncpu µs | floodgate ${f%.*} req/s p99 $f99 ms cpu $fcpu µs | throughput ratio $(ratio "$f" "$n") (target >= 1.0), p99 ratio $(ratio "$f99" "$n99") (target <= 1.0)")
    offered=$(python3 -c "print(round(min($n, $f) * $PACED_SHARE))")
    n_paced=(); f_paced=()
    for round in $(seq "$ROUNDS"); do
      n_paced+=("$(paced_run "$offered" "$nginx_base" "$page")")
      echo "cache=$cache workers=$workers round $round paced at $offered/s: nginx     (kept up, answers/s, p99 ms) ${n_paced[-1]}"
      f_paced+=("$(paced_run "$offered" "$floodgate_base" "$page")")
      echo "cache=$cache workers=$workers round $round paced at $offered/s: floodgate (kept up, answers/s, p99 ms) ${f_paced[-1]}"
    done
    read -r n_kept _ n99 < <(printf '%s\n' "${n_paced[@]}" | median_fields)
    read -r f_kept _ f99 < <(printf '%s\n' "${f_paced[@]}" | median_fields)
    summary+=("  paced at $offered/s: nginx p99 $n99 ms | floodgate p99 $f99 ms | p99 ratio $(ratio "$f99" "$n99") (kept up in most rounds: nginx ${n_kept%.*}, floodgate ${f_kept%.*})")
    for pid in "${pids[@]: -2}"; do kill "$pid" 2>/dev/null || true; done
  done
done
printf '%s\n' "${summary[@]}"
