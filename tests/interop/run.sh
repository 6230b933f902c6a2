#!/usr/bin/env bash
# Runs the independent Python client against real nodes: on SQLite with no
# configuration at all (only the ports moved to 0 so runs can overlap), and
# on PostgreSQL through EXITNET_DATABASE_URL. Each node must answer, keep its
# identity across a restart, and exit 0 within 5 s of SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
scripts/install-tools >/dev/null
py=$root/target/tools/venv/bin/python
gen=$root/target/interop-gen
rm -rf "$gen" && mkdir -p "$gen"
"$py" -m grpc_tools.protoc -I proto --python_out="$gen" --grpc_python_out="$gen" proto/exitnet/v1/*.proto
cargo build --quiet -p exitnet-node -p exitnetctl
node_bin=$root/target/debug/exitnet-node
ctl_bin=$root/target/debug/exitnetctl
pg_admin=${EXITNET_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}

start_node() { # dir, extra env...
  local dir=$1; shift
  (cd "$dir" && exec env EXITNET_API__LISTEN=127.0.0.1:0 EXITNET_FEDERATION__LISTEN=127.0.0.1:0 EXITNET_AUTH__MODE=dev "$@" \
    "$node_bin" run </dev/null >>"$dir/node.log" 2>&1) &
  echo $! >"$dir/pid"
  for _ in $(seq 1 500); do
    if [ -f "$dir/exitnet-data/listening.json" ] && grep -q "\"pid\":$(cat "$dir/pid")" "$dir/exitnet-data/listening.json"; then
      sed -E 's/.*"api":"([^"]+)".*/\1/' "$dir/exitnet-data/listening.json"
      return 0
    fi
    sleep 0.02
  done
  echo "node did not start; log:" >&2; cat "$dir/node.log" >&2; return 1
}

check() { # api, dir
  local out token
  token=$("$ctl_bin" --socket "$2/exitnet-data/admin.sock" dev-token --role case_manager --subject interop)
  for _ in $(seq 1 250); do
    if out=$(PYTHONPATH="$gen" "$py" tests/interop/check_node.py --api "$1" --token "$token" 2>&1); then
      echo "$out" | head -1 >&2
      echo "$out" | tail -1
      return 0
    fi
    case "$out" in *FAIL:*) echo "$out" >&2; return 1;; esac
    sleep 0.02
  done
  echo "$out" >&2; return 1
}

stop_node() { # dir
  local pid; pid=$(cat "$1/pid")
  local start; start=$(date +%s%N)
  kill -TERM "$pid"
  for _ in $(seq 1 500); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      local ms=$(( ($(date +%s%N) - start) / 1000000 ))
      [ "$ms" -lt 5000 ] || { echo "FAIL: stop took ${ms} ms" >&2; return 1; }
      grep -q "stopped" "$1/node.log" || { echo "FAIL: no clean stop in the log" >&2; return 1; }
      echo "stopped in ${ms} ms" >&2
      return 0
    fi
    sleep 0.01
  done
  echo "FAIL: node still running 5 s after SIGTERM" >&2; return 1
}

run_case() { # name, extra env...
  local name=$1; shift
  local dir; dir=$(mktemp -d)
  echo "== $name" >&2
  local api fp1 fp2
  api=$(start_node "$dir" "$@"); fp1=$(check "$api" "$dir"); stop_node "$dir"
  api=$(start_node "$dir" "$@"); fp2=$(check "$api" "$dir"); stop_node "$dir"
  [ "$fp1" = "$fp2" ] || { echo "FAIL: identity changed across restart ($fp1 / $fp2)" >&2; exit 1; }
  echo "identity kept across restart: ${fp1:0:16}…" >&2
  rm -rf "$dir"
}

run_case sqlite
db="exitnet_interop_$$"
psql "$pg_admin" -qc "CREATE DATABASE $db" >/dev/null
trap 'psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
run_case postgres "EXITNET_DATABASE_URL=${pg_admin%/*}/$db"
echo "interop: 2 passed, 0 failed"
