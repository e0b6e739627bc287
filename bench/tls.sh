#!/usr/bin/env bash
# TLS on the public listener against nginx with the same certificate (ECDSA P-256), the same
# worker count and the same client (wrk): requests per second over kept-alive TLS, then full
# handshakes per second (every request on a new connection, `Connection: close`). Both serve a
# fixed small answer: nginx a `return 200`, floodgate its /healthz. Rounds alternate nginx and
# floodgate; medians are reported with their ratio and each side's CPU per request.
#
#   GENERATOR_CORES=1 bash bench/tls.sh     # wrk on a core of its own (the issue's setting)
#   ROUNDS=5 DURATION=10s bash bench/tls.sh
#
# Targets: kept-alive requests/s >= 1.0 x nginx, handshakes/s >= 0.8 x nginx. Loopback only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
bench_setup

tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>/dev/null

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes $server_cores;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $(nginx_temp_paths "$work/nginx")
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $tls/cert.pem;
    ssl_certificate_key $tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { default_type application/json; return 200 '{"status":"ok"}'; }
  }
}
CONF
${on_servers[@]+"${on_servers[@]}"} "$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
nginx_procs=$(with_children "${pids[0]}")

cat > "$work/floodgate.toml" <<CONF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
worker_threads = $server_cores
tls = { cert = "$tls/cert.pem", key = "$tls/key.pem" }
[store]
path = "$work/store"
CONF
launch_floodgate "$work/floodgate.toml" "$work/floodgate.out"
floodgate_proc=${pids[-1]}
sleep 0.5
nginx_procs=$(with_children "${pids[0]}")

echo "threads=$THREADS connections=$CONNECTIONS duration=$DURATION rounds=$ROUNDS server cores=$server_cores"
report() { # label, run_wrk's fields
  read -r rate p99 bad server client <<< "$2"
  printf '%-34s %7.0f req/s  p99 %6.2f ms  non-2xx %s  cpu/request: server %s µs, wrk %s µs\n' \
    "$1" "$rate" "$p99" "$bad" "$server" "$client"
}
header=$(mktemp -p "$work")
printf 'wrk.headers["Connection"] = "close"\n' > "$header"
kept_nginx=(); kept_floodgate=(); new_nginx=(); new_floodgate=()
for round in $(seq "$ROUNDS"); do
  line=$(CPU_OF=$nginx_procs run_wrk "https://127.0.0.1:$nginx_port/healthz"); kept_nginx+=("$line")
  report "round $round nginx kept-alive" "$line"
  line=$(CPU_OF=$floodgate_proc run_wrk "$public/healthz"); kept_floodgate+=("$line")
  report "round $round floodgate kept-alive" "$line"
  line=$(CPU_OF=$nginx_procs run_wrk "https://127.0.0.1:$nginx_port/healthz" "$header"); new_nginx+=("$line")
  report "round $round nginx handshakes" "$line"
  line=$(CPU_OF=$floodgate_proc run_wrk "$public/healthz" "$header"); new_floodgate+=("$line")
  report "round $round floodgate handshakes" "$line"
done

median() { printf '%s\n' "$@" | median_fields; }
kn=$(median "${kept_nginx[@]}"); kf=$(median "${kept_floodgate[@]}")
nn=$(median "${new_nginx[@]}"); nf=$(median "${new_floodgate[@]}")
report "median nginx kept-alive" "$kn"
report "median floodgate kept-alive" "$kf"
report "median nginx handshakes" "$nn"
report "median floodgate handshakes" "$nf"
echo "ratio kept-alive requests/s floodgate/nginx $(ratio "${kf%% *}" "${kn%% *}") (target >= 1.0)"
echo "ratio handshakes/s floodgate/nginx $(ratio "${nf%% *}" "${nn%% *}") (target >= 0.8)"
