# Shared by the benchmark scripts: tools, free ports, and wrk runs summarised as
# "requests_per_second p99_ms non_2xx". Source it; it sets nothing up by itself.

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
run_wrk() {
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$1")
  else out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1"); fi
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
p99 = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(f"{rate:.0f} {p99:.2f} {bad.group(1) if bad else 0}")
PY
}
