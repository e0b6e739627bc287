#!/usr/bin/env bash
# The test suite, on any machine with the Rust toolchain: installs what it lacks, then runs
# every test. Run from anywhere:
#   bash scripts/test.sh            (extra arguments go to cargo nextest, e.g. -p floodgate)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the suite needs beyond the toolchain, from Debian:
# - chromium and chromium-driver: the waiting-room page and dashboard tests drive a browser;
# - postgresql: its initdb and pg_ctl start a throwaway cluster per PostgreSQL test (no server
#   is left running, and none is needed beforehand);
# - prometheus: its promtool checks the metrics exposition (installed without its
#   recommended web assets and exporters).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
missing_bare=()
command -v promtool >/dev/null || missing_bare+=(prometheus)
if ((${#missing[@]} + ${#missing_bare[@]})); then
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  echo "scripts/test.sh: installing ${missing[*]} ${missing_bare[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  if ((${#missing[@]})); then
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ((${#missing_bare[@]})); then
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing_bare[@]}" >/dev/null
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --no-fail-fast "$@"
