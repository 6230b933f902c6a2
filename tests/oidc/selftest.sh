#!/usr/bin/env bash
# Self-test for the local OpenID provider (tests/oidc/provider.mjs).
# Needs: node >= 20, npm, curl. Usage: tests/oidc/selftest.sh   (prints PASS/FAIL)
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AUD="urn:exitnet:test"
WORK="$(mktemp -d)"
PROVIDER_PID=""
FAILS=0

cleanup() {
  if [ -n "$PROVIDER_PID" ] && kill -0 "$PROVIDER_PID" 2>/dev/null; then
    kill -TERM "$PROVIDER_PID" 2>/dev/null
    wait "$PROVIDER_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ok()   { echo "  ok:   $*"; }
bad()  { echo "  FAIL: $*"; FAILS=$((FAILS + 1)); }
die()  { echo "  FAIL: $*"; echo "--- provider stderr (tail) ---"; tail -n 30 "$WORK/provider.err" 2>/dev/null; echo "FAIL"; exit 1; }
expect_eq() { # name actual expected
  if [ "$2" = "$3" ]; then ok "$1 = $2"; else bad "$1: got '$2', want '$3'"; fi
}

# json EXPR < json : evaluate a JS expression over `j` (parsed stdin); prints '' for undefined
json() { node -e '
  const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const v = (function () { return eval(process.argv[1]); })();
  process.stdout.write(v === undefined ? "" : (typeof v === "string" ? v : JSON.stringify(v)));
' "$1"; }
# jwt_part N TOKEN : decoded JWT header (0) or payload (1) as JSON
jwt_part() { node -e '
  process.stdout.write(Buffer.from(process.argv[2].split(".")[+process.argv[1]], "base64url").toString());
' "$1" "$2"; }

genkey() { # genkey FILE -> prints kid
  node -e '
    const c = require("crypto");
    const { privateKey } = c.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = privateKey.export({ format: "jwk" });
    Object.assign(jwk, { kid: "test-" + c.randomBytes(8).toString("hex"), alg: "ES256", use: "sig" });
    require("fs").writeFileSync(process.argv[1], JSON.stringify(jwk) + "\n", { mode: 0o600 });
    process.stdout.write(jwk.kid);
  ' "$1"
}

cc_token() { # cc_token CLIENT SECRET -> token response JSON
  curl -sS -u "$1:$2" -d grant_type=client_credentials --data-urlencode "resource=$AUD" "$ISS/token"
}

echo "== setup"
if [ ! -d "$HERE/node_modules/oidc-provider" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed"
fi
KID1="$(genkey "$WORK/key.json")" || die "key generation failed"
ok "generated key kid=$KID1"

node "$HERE/provider.mjs" --key "$WORK/key.json" --port 0 --audience "$AUD" \
  >"$WORK/provider.out" 2>"$WORK/provider.err" &
PROVIDER_PID=$!
for _ in $(seq 1 100); do
  [ -s "$WORK/provider.out" ] && break
  kill -0 "$PROVIDER_PID" 2>/dev/null || die "provider exited early"
  sleep 0.1
done
READY="$(head -n 1 "$WORK/provider.out")"
[ -n "$READY" ] || die "no ready line within 10s"
echo "  ready line: $READY"
ISS="$(echo "$READY" | json 'j.issuer')"
PORT="$(echo "$READY" | json 'j.port')"
expect_eq "issuer" "$ISS" "http://127.0.0.1:$PORT"
expect_eq "ready line keys" "$(echo "$READY" | json 'Object.keys(j).join(",")')" "issuer,port"

DISCO="$(curl -sS "$ISS/.well-known/openid-configuration")" || die "discovery failed"
expect_eq "discovery issuer" "$(echo "$DISCO" | json 'j.issuer')" "$ISS"
expect_eq "token_endpoint" "$(echo "$DISCO" | json 'j.token_endpoint')" "$ISS/token"
expect_eq "device_authorization_endpoint" "$(echo "$DISCO" | json 'j.device_authorization_endpoint')" "$ISS/device/auth"
expect_eq "jwks_uri" "$(echo "$DISCO" | json 'j.jwks_uri')" "$ISS/jwks"
expect_eq "introspection_endpoint" "$(echo "$DISCO" | json 'j.introspection_endpoint')" "$ISS/token/introspection"
JWKS="$(curl -sS "$ISS/jwks")"
expect_eq "jwks kids" "$(echo "$JWKS" | json 'j.keys.map(k => k.kid).join(",")')" "$KID1"
expect_eq "jwks has no private part" "$(echo "$JWKS" | json 'String(j.keys.some(k => "d" in k))')" "false"

echo "== (a) client credentials"
TOK="$(cc_token agency-system agency-secret)"
AT="$(echo "$TOK" | json 'j.access_token')"
[ -n "$AT" ] || bad "no access_token: $TOK"
HDR="$(jwt_part 0 "$AT")"; PAY="$(jwt_part 1 "$AT")"
echo "  header:  $HDR"
echo "  payload: $PAY"
expect_eq "alg" "$(echo "$HDR" | json 'j.alg')" "ES256"
expect_eq "typ" "$(echo "$HDR" | json 'j.typ')" "at+jwt"
expect_eq "kid" "$(echo "$HDR" | json 'j.kid')" "$KID1"
expect_eq "iss" "$(echo "$PAY" | json 'j.iss')" "$ISS"
expect_eq "aud" "$(echo "$PAY" | json 'j.aud')" "$AUD"
expect_eq "sub" "$(echo "$PAY" | json 'j.sub')" "agency-system"
expect_eq "roles" "$(echo "$PAY" | json 'j.roles')" '["system"]'
expect_eq "lifetime" "$(echo "$PAY" | json 'String(j.exp - j.iat)')" "300"
# without explicit resource parameter the default resource applies
TOK_NR="$(curl -sS -u agency-system:agency-secret -d grant_type=client_credentials "$ISS/token")"
expect_eq "aud without resource param" "$(jwt_part 1 "$(echo "$TOK_NR" | json 'j.access_token')" | json 'j.aud')" "$AUD"
NOROLE="$(cc_token agency-norole norole-secret | json 'j.access_token')"
expect_eq "agency-norole roles" "$(jwt_part 1 "$NOROLE" | json 'j.roles')" ""
BADSECRET="$(cc_token agency-system wrong | json 'j.error')"
expect_eq "wrong secret rejected" "$BADSECRET" "invalid_client"
introspect() { # introspect CLIENT:SECRET TOKEN -> response JSON
  curl -sS -u "$1" --data-urlencode "token=$2" "$ISS/token/introspection"
}
INTRO="$(introspect agency-system:agency-secret "$AT")"
echo "  introspection: $INTRO"
expect_eq "introspection active" "$(echo "$INTRO" | json 'String(j.active)')" "true"
expect_eq "introspection roles" "$(echo "$INTRO" | json 'j.roles')" '["system"]'
expect_eq "introspection aud" "$(echo "$INTRO" | json 'j.aud')" "$AUD"
expect_eq "introspection (client_secret_post)" "$(curl -sS -d client_id=agency-system -d client_secret=agency-secret \
  --data-urlencode "token=$AT" "$ISS/token/introspection" | json 'String(j.active)')" "true"
expect_eq "introspection bad secret" "$(introspect agency-system:nope "$AT" | json 'j.error')" "invalid_client"
expect_eq "introspection tampered token" "$(introspect agency-system:agency-secret "${AT%?????}AAAAA" | json 'String(j.active)')" "false"
expect_eq "introspection garbage token" "$(introspect agency-system:agency-secret "not-a-token" | json 'String(j.active)')" "false"

echo "== (b) device flow (alice)"
DA="$(curl -sS -d client_id=exitnetctl --data-urlencode "scope=openid offline_access" "$ISS/device/auth")"
echo "  device/auth: $DA"
VURI="$(echo "$DA" | json 'j.verification_uri')"
UCODE="$(echo "$DA" | json 'j.user_code')"
DCODE="$(echo "$DA" | json 'j.device_code')"
[ -n "$VURI" ] && [ -n "$UCODE" ] && [ -n "$DCODE" ] || die "bad device authorization response"
poll() {
  curl -sS -d client_id=exitnetctl -d grant_type=urn:ietf:params:oauth:grant-type:device_code \
    --data-urlencode "device_code=$DCODE" "$ISS/token"
}
expect_eq "before approval" "$(poll | json 'j.error')" "authorization_pending"
if node "$HERE/complete-device.mjs" "$VURI" "$UCODE" alice; then ok "complete-device.mjs"; else bad "complete-device.mjs exited non-zero"; fi
DT=""
for _ in $(seq 1 20); do
  DT="$(poll)"
  [ -n "$(echo "$DT" | json 'j.access_token')" ] && break
  [ "$(echo "$DT" | json 'j.error')" = "authorization_pending" ] || break
  sleep 1
done
DAT="$(echo "$DT" | json 'j.access_token')"
RT="$(echo "$DT" | json 'j.refresh_token')"
[ -n "$DAT" ] || die "device flow gave no access token: $DT"
echo "  token response keys: $(echo "$DT" | json 'Object.keys(j).join(",")')"
echo "  header:  $(jwt_part 0 "$DAT")"
echo "  payload: $(jwt_part 1 "$DAT")"
expect_eq "device typ" "$(jwt_part 0 "$DAT" | json 'j.typ')" "at+jwt"
expect_eq "device aud" "$(jwt_part 1 "$DAT" | json 'j.aud')" "$AUD"
expect_eq "device sub" "$(jwt_part 1 "$DAT" | json 'j.sub')" "alice"
expect_eq "device client_id" "$(jwt_part 1 "$DAT" | json 'j.client_id')" "exitnetctl"
expect_eq "device roles" "$(jwt_part 1 "$DAT" | json 'j.roles')" '["case_manager"]'
if [ -n "$RT" ]; then ok "refresh_token issued"; else bad "no refresh_token: $DT"; fi

RR="$(curl -sS -d client_id=exitnetctl -d grant_type=refresh_token --data-urlencode "refresh_token=$RT" "$ISS/token")"
RAT="$(echo "$RR" | json 'j.access_token')"
[ -n "$RAT" ] || bad "refresh gave no access token: $RR"
echo "  refreshed payload: $(jwt_part 1 "$RAT")"
expect_eq "refreshed aud" "$(jwt_part 1 "$RAT" | json 'j.aud')" "$AUD"
expect_eq "refreshed sub" "$(jwt_part 1 "$RAT" | json 'j.sub')" "alice"
expect_eq "refreshed roles" "$(jwt_part 1 "$RAT" | json 'j.roles')" '["case_manager"]'
RT2="$(echo "$RR" | json 'j.refresh_token')"
expect_eq "refresh token introspection (passthrough)" \
  "$(introspect agency-system:agency-secret "$RT2" | json 'j.active + " " + j.sub')" "true alice"
expect_eq "introspect alice's token" "$(introspect agency-system:agency-secret "$DAT" | json 'j.sub + " " + j.active')" "alice true"
if [ -n "$RT2" ] && [ "$RT2" != "$RT" ]; then ok "refresh token rotated"; else bad "refresh token not rotated: $RR"; fi

echo "== (c) key rotation (SIGHUP)"
KID2="$(genkey "$WORK/key.json.new")" && mv "$WORK/key.json.new" "$WORK/key.json"
kill -HUP "$PROVIDER_PID"
for _ in $(seq 1 50); do
  grep -q '"rotated"' "$WORK/provider.out" && break
  sleep 0.1
done
ROT="$(grep '"rotated"' "$WORK/provider.out" | tail -n 1)"
echo "  rotation line: $ROT"
expect_eq "rotated kid" "$(echo "$ROT" | json 'j.kid')" "$KID2"
expect_eq "jwks kids after rotation" "$(curl -sS "$ISS/jwks" | json 'j.keys.map(k => k.kid).join(",")')" "$KID2"
AT2="$(cc_token agency-system agency-secret | json 'j.access_token')"
expect_eq "new token kid" "$(jwt_part 0 "$AT2" | json 'j.kid')" "$KID2"
expect_eq "same issuer after rotation" "$(jwt_part 1 "$AT2" | json 'j.iss')" "$ISS"
RR2="$(curl -sS -d client_id=exitnetctl -d grant_type=refresh_token --data-urlencode "refresh_token=$RT2" "$ISS/token")"
expect_eq "pre-rotation refresh token still usable, new kid" \
  "$(jwt_part 0 "$(echo "$RR2" | json 'j.access_token')" | json 'j.kid')" "$KID2"
expect_eq "old-key token inactive after rotation" "$(introspect agency-system:agency-secret "$AT" | json 'String(j.active)')" "false"
expect_eq "new-key token active" "$(introspect agency-system:agency-secret "$AT2" | json 'String(j.active)')" "true"
expect_eq "device code reuse rejected" "$(poll | json 'j.error')" "invalid_grant"
expect_eq "stdout has only JSON lines" \
  "$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n");
     process.stdout.write(String(l.every(x=>{try{JSON.parse(x);return true}catch{return false}})))' "$WORK/provider.out")" "true"

echo "== shutdown"
kill -TERM "$PROVIDER_PID"
wait "$PROVIDER_PID"; RC=$?
PROVIDER_PID=""
expect_eq "exit status on SIGTERM" "$RC" "0"

if [ "$FAILS" -eq 0 ]; then
  echo "PASS"
else
  echo "--- provider stderr (tail) ---"; tail -n 30 "$WORK/provider.err"
  echo "FAIL ($FAILS check(s) failed)"
  exit 1
fi
