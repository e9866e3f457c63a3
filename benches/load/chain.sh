#!/usr/bin/env bash
# Load bench, "chain" scenario: what the request pipeline costs, before and after a
# change. Question: on a plain route and on a route whose chain carries app signature +
# permission group + IP allow list + limits + breaker (+ header edits, where the binary
# has them), does BIN keep req/s and CPU per request within 2% of BASE_BIN?
#
# One pinned worker per gateway. Every measured run starts a fresh gateway (an empty
# nonce cache, so the pre-signed requests are never replays), warms it up on the plain
# route, then measures one scenario with the same pre-signed lines (`auth.lua`; the plain
# route gets the signature headers too and strips them, so wrk's work is the same).
# Runs alternate: each round measures every (binary, scenario) pair, in rotated order.
#
#   BASE_BIN=/path/to/old/ringgate benches/load/chain.sh
#   PROXY_CPU_QUOTA=50 BASE_BIN=... benches/load/chain.sh   # req/s with the proxy the bottleneck
#
# Knobs: ROUNDS=5 DURATION=10 WARMUP=2 CONNECTIONS=64 THREADS=1 PROXY_CPU=1 LOAD_CPU=0
#   BASE_BIN (required) BIN (default: cargo build --release) MAX_RPS=150000 DRIVER=io_uring
#   PROXY_CPU_QUOTA= PROXY_CPU_QUOTA_PERIOD_US=5000 GW_PORT=28380 UP_PORT=28381 ADMIN_PORT=28382
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DRIVER=${DRIVER:-io_uring}
GW_PORT=${GW_PORT:-28380}
UP_PORT=${UP_PORT:-28381}
ADMIN_PORT=${ADMIN_PORT:-28382}
MAX_RPS=${MAX_RPS:-150000}   # sizes the pre-signed set: DURATION x MAX_RPS requests
PROXY_CPU_QUOTA=${PROXY_CPU_QUOTA:-}
PROXY_CPU_QUOTA_PERIOD_US=${PROXY_CPU_QUOTA_PERIOD_US:-5000}

die() { echo "chain.sh: $*" >&2; exit 1; }
for tool in wrk nginx taskset curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx curl)"
done
[[ -x "${BASE_BIN:-}" ]] || die "BASE_BIN must name the ringgate binary to compare against"
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN=target/release/ringgate
fi
cargo build --release --quiet --example presign

TMP=$(mktemp -d /tmp/ringgate-chain.XXXXXX)
PIDS=()
CGROUPS=()
cleanup() {
    local p cg
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for cg in "${CGROUPS[@]:-}"; do [[ -n "$cg" ]] && rmdir "$cg" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=common.sh
source "$HERE/common.sh"
cgroup_setup
make_cgroup gateway
CG=$MADE_CG

KEY=app-bench
SECRET=bench-secret-0000000001
TS=$(date +%s)
COUNT=$((DURATION * MAX_RPS))
echo "== pre-signing $COUNT requests per signed path"
for p in full full_headers; do
    target/release/examples/presign "$COUNT" "$KEY" "$SECRET" "/$p/item" "$TS" > "$TMP/$p.txt"
done

start_upstream_nginx "$TMP/up" "$UP_PORT" "$LOAD_CPU"

cat > "$TMP/apps.toml" <<CONF
[[apps]]
key = "$KEY"
secrets = ["$SECRET"]
groups = ["bench"]
allow_ips = ["127.0.0.0/8"]
CONF
# The protected chain every binary understands; `headers` joins it where the binary
# has the filter.
FULL='upstream = "backend"
group = "bench"
auth = "hmac"
limits = [ { key = "app", rate = "10000000/s" }, { key = "ip", rate = "10000000/s" } ]
breaker = { consecutive_failures = 5, error_rate = 0.5, window = "10s" }'
gateway_conf() {  # WITH_HEADERS(0|1)
    signed_gateway_head "$GW_PORT" "$ADMIN_PORT" "$UP_PORT" "$DRIVER"
    cat <<CONF
[[routes]]
name = "plain"
path = "/plain/*"
upstream = "backend"
[[routes]]
name = "full"
path = "/full/*"
$FULL
CONF
    [[ $1 == 1 ]] || return 0
    cat <<CONF
[[routes]]
name = "full_headers"
path = "/full_headers/*"
$FULL
[routes.headers.request]
set = { "x-api-version" = "2" }
add = { "x-caller" = "\$app_key" }
remove = ["x-debug"]
[routes.headers.response]
set = { "cache-control" = "no-store" }
remove = ["server"]
CONF
}
gateway_conf 0 > "$TMP/base.toml"
gateway_conf 1 > "$TMP/new.toml"
"$BASE_BIN" check --config "$TMP/base.toml" >/dev/null || die "BASE_BIN refused its config"
"$BIN" check --config "$TMP/new.toml" >/dev/null || die "BIN refused its config"

CLK_TCK=$(getconf CLK_TCK)
# measure ROUND BINARY-NAME SCENARIO -> a result line in $TMP/results
measure() {
    local round=$1 which=$2 scenario=$3 bin=$BIN conf=$TMP/new.toml lines=$TMP/full.txt
    if [[ $which == base ]]; then bin=$BASE_BIN conf=$TMP/base.toml; fi
    [[ $scenario == full_headers ]] && lines=$TMP/full_headers.txt
    (
        if [[ "$CG" != - ]]; then echo "$BASHPID" > "$CG/cgroup.procs"; fi
        RUST_LOG=warn exec taskset -c "$PROXY_CPU" "$bin" run --config "$conf"
    ) > "$TMP/gw.out" 2>&1 &
    local gw=$!
    PIDS+=("$gw")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null && break; sleep 0.05; done
    wrk_signed "$lines" /plain/item "$WARMUP" /dev/null
    local t0 t1 pb0 pt0 pb1 pt1 lb0 lt0 lb1 lt1 parsed reqs rps p99 errs non2xx
    t0=$(proc_ticks "$gw")
    read -r pb0 pt0 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb0 lt0 < <(cpu_jiffies "$LOAD_CPU")
    wrk_signed "$lines" "/$scenario/item" "$DURATION" "$TMP/wrk.txt" --latency
    t1=$(proc_ticks "$gw")
    read -r pb1 pt1 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb1 lt1 < <(cpu_jiffies "$LOAD_CPU")
    kill "$gw"; wait "$gw" 2>/dev/null || true
    parsed=$(wrk_parse "$TMP/wrk.txt") || { cat "$TMP/wrk.txt" "$TMP/gw.out" >&2; die "could not parse wrk output"; }
    read -r reqs rps p99 errs non2xx <<< "$parsed"
    awk -v r="$round" -v w="$which" -v s="$scenario" -v rps="$rps" -v p99="$p99" -v reqs="$reqs" \
        -v dt=$((t1 - t0)) -v hz="$CLK_TCK" -v e=$((errs + non2xx)) -v pb=$((pb1 - pb0)) \
        -v pt=$((pt1 - pt0)) -v lb=$((lb1 - lb0)) -v lt=$((lt1 - lt0)) 'BEGIN {
            printf "%-5s %-4s %-12s %10.0f %8.3f %10.2f %6d %6.1f %6.1f\n", r, w, s, rps, p99,
                dt * 1e6 / hz / reqs, e, pt ? 100 * pb / pt : 0, lt ? 100 * lb / lt : 0
        }' | tee -a "$TMP/results"
}

RUNS=("base plain" "new plain" "base full" "new full" "new full_headers")
echo "== $ROUNDS rounds x ${#RUNS[@]} runs, ${WARMUP}s warmup + ${DURATION}s, $CONNECTIONS connections; gateway on CPU $PROXY_CPU${PROXY_CPU_QUOTA:+ capped at $PROXY_CPU_QUOTA%}, wrk+upstream on CPU $LOAD_CPU"
echo "(errors: socket errors + non-2xx; cpu%P / cpu%L: busy share of the gateway's CPU / of the wrk+upstream CPU)"
printf '%-5s %-4s %-12s %10s %8s %10s %6s %6s %6s\n' round bin scenario req/s "p99 ms" "cpu us/req" errors cpu%P cpu%L
: > "$TMP/results"
for ((round = 1; round <= ROUNDS; round++)); do
    n=${#RUNS[@]}
    for ((i = 0; i < n; i++)); do
        run=${RUNS[$(((i + round - 1) % n))]}
        measure "$round" $run
    done
done

echo
echo "Medians of $ROUNDS rounds"
printf '%-4s %-12s %10s %8s %10s %6s %6s\n' bin scenario req/s "p99 ms" "cpu us/req" errors cpu%L
declare -A MED
for run in "${RUNS[@]}"; do
    read -r w s <<< "$run"
    col() { awk -v w="$w" -v s="$s" -v c="$1" '$2 == w && $3 == s { print $c }' "$TMP/results" | median; }
    rps=$(col 4) p99=$(col 5) us=$(col 6) load=$(col 9)
    errs=$(awk -v w="$w" -v s="$s" '$2 == w && $3 == s { t += $7 } END { print t + 0 }' "$TMP/results")
    printf '%-4s %-12s %10.0f %8.3f %10.2f %6d %6.1f\n' "$w" "$s" "$rps" "$p99" "$us" "$errs" "$load"
    MED[$w,$s,rps]=$rps MED[$w,$s,us]=$us MED[$w,$s,p99]=$p99
done
echo
for s in plain full; do
    awk -v a="${MED[new,$s,rps]}" -v b="${MED[base,$s,rps]}" -v c="${MED[new,$s,us]}" \
        -v d="${MED[base,$s,us]}" -v e="${MED[new,$s,p99]}" -v f="${MED[base,$s,p99]}" -v s="$s" 'BEGIN {
        ok = (a / b >= 0.98 && c / d <= 1.02) ? "PASS" : "FAIL"
        printf "%-5s new / base: req/s %.3f, cpu/request %.3f, p99 %.3f   target: req/s and cpu within 2%%  %s\n",
            s, a / b, c / d, e / f, ok
    }'
done
awk -v a="${MED[new,full_headers,us]}" -v b="${MED[new,full,us]}" 'BEGIN {
    printf "headers filter (new): %+.2f us a request (cpu/request %.3f of the full chain without it)\n", a - b, a / b }'
