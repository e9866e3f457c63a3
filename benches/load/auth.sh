#!/usr/bin/env bash
# Load bench, "hmac" scenario: what authentication costs. One pinned ringgate worker,
# the same pre-signed requests (one nonce each, from examples/presign.rs) sent by wrk to a
# route with `auth = "hmac"` and to the same route without it; req/s and CPU microseconds
# per request for both, and the ratio. Each measured run gets a fresh gateway process,
# so its nonce cache starts empty and no request is a replay.
#
#   benches/load/auth.sh            # ROUNDS=5 DURATION=10 WARMUP=2 CONNECTIONS=64 THREADS=1
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
GW_PORT=${GW_PORT:-28180}
UP_PORT=${UP_PORT:-28181}
ADMIN_PORT=${ADMIN_PORT:-28182}
MAX_RPS=${MAX_RPS:-150000}   # sizes the pre-signed set: DURATION x MAX_RPS requests

for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "auth.sh: $tool not found (apt-get install -y wrk nginx)" >&2; exit 1; }
done
if [ -z "${RINGGATE_BIN:-}" ]; then
    cargo build --release --quiet
    RINGGATE_BIN=target/release/ringgate
fi
cargo build --release --quiet --example presign

TMP=$(mktemp -d /tmp/ringgate-auth.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=common.sh
source benches/load/common.sh

KEY=app-bench
SECRET=bench-secret-0000000001
TS=$(date +%s)
COUNT=$((DURATION * MAX_RPS))
echo "== pre-signing $COUNT requests"
target/release/examples/presign "$COUNT" "$KEY" "$SECRET" /signed/item "$TS" > "$TMP/signed.txt"
# The plain run sends the same lines to /plain/item; the signature headers ride along
# (and are stripped), so the load generator's work is identical.

start_upstream_nginx "$TMP/up" "$UP_PORT" "$LOAD_CPU"

cat > "$TMP/apps.toml" <<CONF
[[apps]]
key = "$KEY"
secrets = ["$SECRET"]
groups = ["bench"]
CONF
{
    signed_gateway_head "$GW_PORT" "$ADMIN_PORT" "$UP_PORT" io_uring
    cat <<CONF
[[routes]]
name = "signed"
path = "/signed/*"
upstream = "backend"
group = "bench"
auth = "hmac"
[[routes]]
name = "plain"
path = "/plain/*"
upstream = "backend"
CONF
} > "$TMP/ringgate.toml"
"$RINGGATE_BIN" check --config "$TMP/ringgate.toml" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run SCENARIO ROUND -> appends "round scenario rps cpu_us_per_req non2xx" to $TMP/results
run() {
    local scenario=$1 round=$2 path=/plain/item
    [ "$scenario" = hmac ] && path=/signed/item
    RUST_LOG=warn taskset -c "$PROXY_CPU" "$RINGGATE_BIN" run --config "$TMP/ringgate.toml" &
    local gw=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null && break; sleep 0.05; done
    # Warm up on the plain route: it records no nonces.
    wrk_signed "$TMP/signed.txt" /plain/item "$WARMUP" /dev/null
    local t0 t1 out
    t0=$(cpu_ticks "$gw")
    wrk_signed "$TMP/signed.txt" "$path" "$DURATION" "$TMP/wrk.txt"
    out=$(cat "$TMP/wrk.txt")
    t1=$(cpu_ticks "$gw")
    kill "$gw"; wait "$gw" 2>/dev/null || true
    local requests rps non2xx
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    local tck; tck=$(getconf CLK_TCK)
    local us; us=$(awk -v d=$((t1 - t0)) -v r="$requests" -v h="$tck" 'BEGIN {printf "%.2f", d * 1e6 / h / r}')
    echo "$round $scenario $rps $us ${non2xx:-0}" | tee -a "$TMP/results"
}

echo "== $ROUNDS rounds x (plain, hmac), ${DURATION}s each after ${WARMUP}s warmup, $CONNECTIONS connections"
echo "round scenario req/s cpu_us_per_req non2xx"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="plain hmac"; else order="hmac plain"; fi
    for s in $order; do run "$s" "$r"; done
done

for s in plain hmac; do
    rps=$(awk -v s=$s '$2 == s {print $3}' "$TMP/results" | median)
    us=$(awk -v s=$s '$2 == s {print $4}' "$TMP/results" | median)
    errs=$(awk -v s=$s '$2 == s {t += $5} END {print t + 0}' "$TMP/results")
    printf '%-6s median req/s %10.0f   cpu us/req %6.2f   non-2xx %s\n' "$s" "$rps" "$us" "$errs"
    eval "${s}_rps=$rps ${s}_us=$us"
done
awk -v a="$hmac_rps" -v b="$plain_rps" -v c="$hmac_us" -v d="$plain_us" 'BEGIN {
    printf "hmac / plain: req/s %.3f (cost %.1f%%), cpu/request %.3f (cost %.1f%%)   target: cost <= 10%%\n",
        a / b, (1 - a / b) * 100, c / d, (c / d - 1) * 100 }'
