#!/usr/bin/env bash
# Runs the independent Python client against real nodes.
#
#  1. check_node.py on one node on SQLite with no configuration at all (only
#     the ports moved to 0 so runs can overlap), then on PostgreSQL through
#     EXITNET_DATABASE_URL. Each node must answer, keep its identity across a
#     restart, and exit 0 within 5 s of SIGTERM.
#  2. referral_flow.py on two nodes peered through the real flow with
#     exitnetctl (invite, join, approve): A on SQLite signing its callers in
#     with a real OpenID provider (tests/oidc/provider.mjs), B on PostgreSQL in
#     development sign-in. The client gets its own token from the provider,
#     records a consent, sends a referral, watches it be delivered and accepted
#     at B, and checks that bad input is INVALID_ARGUMENT naming the field.
#  3. hostile.py on two nodes on SQLite in development sign-in: A with low
#     limits per caller (rate, burst, calls in flight), a small message limit
#     and a short TLS handshake deadline, B with a low limit per address. While
#     a good client keeps calling A, garbage, HTTP/1.1, oversized, undecodable
#     and invalid requests, floods of bad tokens and of one caller's calls, too
#     many watches, and strangers' TLS (fresh keys, no certificate, TLS 1.2,
#     plaintext) on A's federation port are each answered with the right code;
#     the refusals are in `exitnetctl security events`, both nodes stay
#     SERVING, log no panic and stop cleanly.
#
# Every PostgreSQL database is fresh per run and dropped on exit; nodes and the
# provider are stopped on exit, also after a failure.
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
audience=urn:exitnet:test

work=$(mktemp -d)
passed=0
dbs=()
oidc_pid=
cleanup() {
  local rc=$?
  local f
  for f in "$work"/*/pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  [ -z "$oidc_pid" ] || kill -TERM "$oidc_pid" 2>/dev/null || true
  for f in ${dbs[@]+"${dbs[@]}"}; do
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $f WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  [ "$rc" -eq 0 ] || echo "interop: $passed passed, 1 failed" >&2
}
trap cleanup EXIT

die() { echo "FAIL: $*" >&2; exit 1; }

new_db() { # name: a fresh database, dropped on exit
  psql "$pg_admin" -qc "CREATE DATABASE $1" >/dev/null
  dbs+=("$1")
}

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

running() { # pid: alive and not just a zombie waiting for its (re)parent to reap it
  kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_node() { # dir
  local pid; pid=$(cat "$1/pid")
  local start; start=$(date +%s%N)
  kill -TERM "$pid"
  for _ in $(seq 1 500); do
    if ! running "$pid"; then
      wait "$pid" 2>/dev/null || true
      rm -f "$1/pid"
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
  local dir=$work/$name
  mkdir -p "$dir"
  echo "== $name" >&2
  local api fp1 fp2
  api=$(start_node "$dir" EXITNET_ORG__ID="interop-$name" "$@"); fp1=$(check "$api" "$dir"); stop_node "$dir"
  api=$(start_node "$dir" EXITNET_ORG__ID="interop-$name" "$@"); fp2=$(check "$api" "$dir"); stop_node "$dir"
  [ "$fp1" = "$fp2" ] || die "identity changed across restart ($fp1 / $fp2)"
  echo "identity kept across restart: ${fp1:0:16}…" >&2
  passed=$((passed + 1))
}

# ---- the peered flow ----------------------------------------------------------

ctl() { # dir, exitnetctl arguments... (JSON output)
  local dir=$1; shift
  "$ctl_bin" --socket "$dir/exitnet-data/admin.sock" --output json "$@"
}

json_get() { # key or index... : one value from the JSON on stdin
  "$py" -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) or v is None else v)' "$@"
}

peer_is() { # dir, org, state, remote_state: the node's only peer is org, in these states
  local list; list=$(ctl "$1" peer list)
  [ "$(json_get 0 org_id <<<"$list")" = "$2" ] &&
    [ "$(json_get 0 state <<<"$list")" = "$3" ] &&
    [ "$(json_get 0 remote_state <<<"$list")" = "$4" ]
}

start_oidc() { # dir: a fresh P-256 key (node's crypto), then the provider; sets oidc_pid and issuer
  node -e '
    const c = require("crypto");
    const { privateKey } = c.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = privateKey.export({ format: "jwk" });
    Object.assign(jwk, { kid: "interop-" + c.randomBytes(6).toString("hex"), alg: "ES256", use: "sig" });
    require("fs").writeFileSync(process.argv[1], JSON.stringify(jwk), { mode: 0o600 });
  ' "$1/oidc-key.json"
  node tests/oidc/provider.mjs --key "$1/oidc-key.json" --port 0 --audience "$audience" \
    </dev/null >"$1/oidc.out" 2>"$1/oidc.log" &
  oidc_pid=$!
  for _ in $(seq 1 1500); do
    if [ "$(wc -l <"$1/oidc.out")" -ge 1 ]; then # its ready line: {"issuer":…,"port":…}
      issuer=$(head -1 "$1/oidc.out" | json_get issuer)
      return 0
    fi
    kill -0 "$oidc_pid" 2>/dev/null || { cat "$1/oidc.log" >&2; die "the OpenID provider exited"; }
    sleep 0.02
  done
  cat "$1/oidc.log" >&2; die "the OpenID provider did not print its ready line in 30 s"
}

run_peered() {
  local a=$work/peered-a b=$work/peered-b org_a=ngo-a org_b=prison-b
  mkdir -p "$a" "$b"
  echo "== peered: $org_a (SQLite, OpenID sign-in) and $org_b (PostgreSQL, development sign-in)" >&2
  local issuer
  start_oidc "$work"
  echo "OpenID provider (tests/oidc/provider.mjs) at $issuer" >&2
  local db_b=exitnet_interop_$$_b
  new_db "$db_b"
  local api_a api_b
  # The agency system may act only for the case managers listed for it
  # (auth.system_acts_for): a map keyed by client ID, which needs a file.
  printf '[auth.system_acts_for]\n"agency-system" = "alice"\n' >"$a/exitnet.toml"
  api_a=$(start_node "$a" EXITNET_CONFIG="$a/exitnet.toml" EXITNET_ORG__ID=$org_a EXITNET_ORG__SECTOR=ngo \
    EXITNET_AUTH__MODE=oidc EXITNET_AUTH__ISSUER="$issuer" EXITNET_AUTH__AUDIENCE=$audience)
  api_b=$(start_node "$b" EXITNET_ORG__ID=$org_b EXITNET_ORG__SECTOR=prison_probation \
    EXITNET_ORG__NEED_AREAS=mental_health,social_reintegration EXITNET_ORG__SERVICES=trauma_ptsd,mentoring \
    EXITNET_DATABASE_URL="${pg_admin%/*}/$db_b")
  grep -q 'backend="sqlite"' "$a/node.log" || die "node A is not on SQLite"
  grep -q 'backend="postgres"' "$b/node.log" || die "node B is not on PostgreSQL"

  # Peering, as two administrators do it (docs/trust.md).
  local code joined out list_a
  code=$(ctl "$a" peer invite --expires 10m --note interop | json_get code)
  joined=$(ctl "$b" peer join - <<<"$code")
  [ "$(json_get org_id <<<"$joined") $(json_get state <<<"$joined") $(json_get awaiting <<<"$joined")" = "$org_a pending remote" ] ||
    die "after the join B shows $joined"
  # Joining was B's approval; B cannot approve again before A does.
  if out=$(ctl "$b" peer approve "$org_a" 2>&1); then die "B approved a peering that waits for A: $out"; fi
  case "$out" in *"waits for the other administrator"*) ;; *) die "B's early approve answered: $out";; esac
  list_a=$(ctl "$a" peer list)
  [ "$(json_get 0 org_id <<<"$list_a") $(json_get 0 state <<<"$list_a") $(json_get 0 awaiting <<<"$list_a")" = "$org_b pending local" ] ||
    die "after the join A shows $list_a"
  [ "$(json_get 0 verification_code <<<"$list_a")" = "$(json_get verification_code <<<"$joined")" ] ||
    die "verification codes differ: A $(json_get 0 verification_code <<<"$list_a"), B $(json_get verification_code <<<"$joined")"
  [ "$(ctl "$a" peer approve "$org_b" | json_get state)" = active ] || die "A's approval did not make $org_b active"
  for _ in $(seq 1 500); do
    if peer_is "$a" $org_b active active && peer_is "$b" $org_a active active; then break; fi
    sleep 0.02
  done
  peer_is "$a" $org_b active active && peer_is "$b" $org_a active active ||
    die "the peering is not active on both sides: A $(ctl "$a" peer list), B $(ctl "$b" peer list)"
  echo "peered through invite, join and approve; verification code $(json_get 0 verification_code <<<"$list_a") on both sides; active on both" >&2

  local token_b rid
  token_b=$("$ctl_bin" --socket "$b/exitnet-data/admin.sock" dev-token --role case_manager --subject bob)
  rid=$(PYTHONPATH="$gen" "$py" tests/interop/referral_flow.py --api-a "$api_a" --api-b "$api_b" \
    --org-a $org_a --org-b $org_b --issuer "$issuer" --audience $audience \
    --client-id agency-system --client-secret agency-secret --case-manager-a alice --token-b "$token_b")
  [[ "$rid" =~ ^[0-9a-f-]{36}$ ]] || die "the flow did not end with a referral ID"
  local row; row=$(psql "${pg_admin%/*}/$db_b" -Atc "SELECT direction || ' ' || state FROM referrals WHERE referral_id = '$rid'")
  [ "$row" = "inbound accepted" ] || die "B's PostgreSQL database holds '$row' for $rid"
  echo "B's PostgreSQL database holds $rid as: $row" >&2
  stop_node "$a"; stop_node "$b"
  kill -TERM "$oidc_pid"; wait "$oidc_pid" || die "the OpenID provider did not exit cleanly"; oidc_pid=
  passed=$((passed + 1))
}

# ---- hostile input ------------------------------------------------------------

run_hostile() {
  local a=$work/hostile-a b=$work/hostile-b org_a=hostile-a org_b=hostile-b
  # A: low limits per caller; the limit per address high, since every caller
  # here comes from 127.0.0.1. B: a low limit per address.
  local max_message=65536 rate=20 burst=40 in_flight=4 b_rate=5 b_burst=20 handshake_ms=2000
  mkdir -p "$a" "$b"
  echo "== hostile: $org_a (SQLite, limits per caller) and $org_b (SQLite, limit per address), development sign-in" >&2
  local api_a api_b fed_a summary
  api_a=$(start_node "$a" EXITNET_ORG__ID=$org_a EXITNET_LIMITS__MAX_MESSAGE_BYTES=$max_message \
    EXITNET_LIMITS__CALLER_CALLS_PER_SEC=$rate EXITNET_LIMITS__CALLER_BURST=$burst \
    EXITNET_LIMITS__CALLER_MAX_IN_FLIGHT=$in_flight \
    EXITNET_LIMITS__ADDRESS_CALLS_PER_SEC=100000 EXITNET_LIMITS__ADDRESS_BURST=100000 \
    EXITNET_FEDERATION__HANDSHAKE_TIMEOUT_MS=$handshake_ms)
  api_b=$(start_node "$b" EXITNET_ORG__ID=$org_b \
    EXITNET_LIMITS__ADDRESS_CALLS_PER_SEC=$b_rate EXITNET_LIMITS__ADDRESS_BURST=$b_burst)
  fed_a=$(json_get federation <"$a/exitnet-data/listening.json")
  summary=$(PYTHONPATH="$gen" "$py" tests/interop/hostile.py --strict \
    --api-a "$api_a" --fed-a "$fed_a" --org-a $org_a --socket-a "$a/exitnet-data/admin.sock" --log-a "$a/node.log" \
    --api-b "$api_b" --org-b $org_b --socket-b "$b/exitnet-data/admin.sock" --log-b "$b/node.log" \
    --ctl "$ctl_bin" --max-message-bytes $max_message --caller-rate $rate --caller-burst $burst \
    --caller-in-flight $in_flight --b-address-rate $b_rate --b-address-burst $b_burst \
    --handshake-timeout-ms $handshake_ms)
  [[ "$summary" =~ ^hostile:\ [0-9]+\ passed,\ 0\ failed$ ]] || die "hostile.py ended with '$summary'"
  echo "$summary" >&2
  stop_node "$a"; stop_node "$b"
  ! grep -q panicked "$a/node.log" "$b/node.log" || die "a node panicked: $(grep -h -m1 panicked "$a/node.log" "$b/node.log")"
  passed=$((passed + 1))
}

run_case sqlite
db="exitnet_interop_$$"
new_db "$db"
run_case postgres "EXITNET_DATABASE_URL=${pg_admin%/*}/$db"
run_peered
run_hostile
echo "interop: $passed passed, 0 failed"
