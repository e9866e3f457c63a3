#!/usr/bin/env bash
# Overload: one ringgate worker offered twice what it can serve, two ways.
#
# Question answered: offered 2x its capacity, does the worker stay up with bounded memory,
# keep serving at its capacity, shed early and cheaply (counted), and keep the latency of
# what it admits bounded? And does it leave a load it can carry (0.8x) alone? Each 2x
# run is repeated with shedding off (`max_loop_delay = "off"`) to show what it buys.
#
#  keep-alive  CONNECTIONS clients, each a keep-alive connection sending on its own
#              schedule (examples/loadgen.rs: open loop, latency from when each request
#              was due, and from when it was sent). Capacity: what the worker serves to
#              the same connections in a closed loop with shedding off.
#  tls-flood   every request on a new HTTPS connection with a full handshake (TLS 1.3,
#              resumption off), h2load creating connections at a fixed rate (every 10 ms).
#              Capacity: the rate at which the worker completes them when offered
#              TLS_SATURATE a second, with shedding off.
#
# Layout: the worker is pinned to PROXY_CPU and capped by cgroup CPU bandwidth
# (KEEPALIVE_QUOTA / TLS_QUOTA percent), so that the load generator, alone on LOAD_CPU,
# can offer twice the worker's capacity on a 2-core box; the upstream nginx shares
# PROXY_CPU outside the cap. Per mode: a fresh gateway, WARMUP then DURATION seconds;
# reports served and shed rates, latencies, errors, the gateway's RSS at the end and
# whether it stayed up. Medians of ROUNDS rounds.
#
# Knobs: ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=4000 TLS_SATURATE=3000 PROXY_CPU=1
#   LOAD_CPU=0 KEEPALIVE_QUOTA=50 TLS_QUOTA=12 DRIVER=io_uring SCENARIOS="keep-alive tls-flood"
#   GW_PORT=18480 TLS_PORT=18486 ADMIN_PORT=19480 UP_PORT=18481 RINGGATE_BIN=path KEEP_TMP=1
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-4000}
TLS_SATURATE=${TLS_SATURATE:-3000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
KEEPALIVE_QUOTA=${KEEPALIVE_QUOTA:-50}
TLS_QUOTA=${TLS_QUOTA:-12}
DRIVER=${DRIVER:-io_uring}
SCENARIOS=${SCENARIOS:-keep-alive tls-flood}
GW_PORT=${GW_PORT:-18480}
TLS_PORT=${TLS_PORT:-18486}
ADMIN_PORT=${ADMIN_PORT:-19480}
UP_PORT=${UP_PORT:-18481}
PROXY_CPU_QUOTA_PERIOD_US=10000
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
die() { echo "overload.sh: $*" >&2; exit 1; }
for tool in nginx taskset curl openssl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx curl openssl)"
done
if [[ " $SCENARIOS " == *" tls-flood "* ]] && ! command -v h2load >/dev/null; then
    die "h2load not found (apt-get install -y nghttp2-client), or SCENARIOS=keep-alive"
fi
(($(ulimit -Hn) > 2 * CONNECTIONS + 1000)) || die "the open-file limit ($(ulimit -Hn)) is too low for $CONNECTIONS connections"
ulimit -n "$(ulimit -Hn)"
# shellcheck source=common.sh
source "$HERE/common.sh"
bench_start overload
cargo build --release --quiet --example loadgen
LOADGEN=$(realpath target/release/examples/loadgen)
PROXY_CPU_QUOTA=$KEEPALIVE_QUOTA
cgroup_setup
CG=""
trap 'bench_cleanup; [[ -z $CG || $CG == - ]] || rmdir "$CG" 2>/dev/null || true' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=bench.local" -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
    -keyout "$TMP/bench.key" -out "$TMP/bench.pem" 2>/dev/null
start_upstream_nginx "$TMP/up" "$UP_PORT" "$PROXY_CPU"

cap_cpu() {  # PERCENT: (re)make the gateway's cgroup with this cap
    [[ -z $CG || $CG == - ]] || rmdir "$CG" 2>/dev/null || true
    PROXY_CPU_QUOTA=$1
    make_cgroup "gateway-$1"
    CG=$MADE_CG
}

gateway_conf() {  # MAX_LOOP_DELAY
    cat <<CONF
[server]
listen = ["127.0.0.1:$GW_PORT"]
workers = 1
cpus = [$PROXY_CPU]
driver = "$DRIVER"
max_loop_delay = "$1"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[tls]
listen = ["127.0.0.1:$TLS_PORT"]
min_version = "1.3"
session_resumption = false
[[tls.certs]]
cert = "$TMP/bench.pem"
key = "$TMP/bench.key"
$(backend_route "$UP_PORT")
CONF
}

GW=""
start_gateway() {  # MAX_LOOP_DELAY
    gateway_conf "$1" > "$TMP/gw.toml"
    (
        if [[ "$CG" != - ]]; then echo "$BASHPID" > "$CG/cgroup.procs"; fi
        RUST_LOG=warn exec taskset -c "$PROXY_CPU" "$RINGGATE_BIN" run --config "$TMP/gw.toml"
    ) > "$TMP/gw.out" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    wait_relaying ringgate "http://127.0.0.1:$GW_PORT/"
}
# stop_gateway: sets RSS (MiB) and ALIVE (yes/NO) of the gateway just before it is
# stopped. Not in a subshell: `wait` only waits for this shell's own children.
stop_gateway() {
    ALIVE=yes
    kill -0 "$GW" 2>/dev/null || ALIVE=NO
    RSS=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$GW/status" 2>/dev/null || echo 0)
    kill "$GW" 2>/dev/null || true
    wait "$GW" 2>/dev/null || true
}
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { print $2; exit }'; }
json() { sed -E "s/.*\"$1\":([-0-9.]+).*/\\1/" <<< "$2"; }
modes() { printf '%s\n' "0.8 50ms" "2 50ms" "2 off"; }

keepalive_load() {  # RATE CONNECTIONS -> loadgen's JSON line
    taskset -c "$LOAD_CPU" "$LOADGEN" --target "127.0.0.1:$GW_PORT" --rate "$1" \
        --connections "$2" --duration "$DURATION" --warmup "$WARMUP" --path /hello > "$TMP/loadgen.out"
    grep -m1 '^first error' "$TMP/loadgen.out" >&2 || true
    tail -1 "$TMP/loadgen.out"
}

keepalive() {
    cap_cpu "$KEEPALIVE_QUOTA"
    start_gateway off
    CAP=$(json served_rps "$(keepalive_load 0 "$CONNECTIONS")")
    stop_gateway
    echo "== keep-alive: $CONNECTIONS connections, worker capped at $KEEPALIVE_QUOTA% of CPU $PROXY_CPU; capacity (closed loop, shedding off): $CAP req/s"
    echo "   (served/shed: answers a second; p99: served, from when due / from when sent; unanswered: due in the run, not answered by its end)"
    printf '%-5s %-5s %-6s %8s %8s %8s %10s %10s %11s %7s %8s %6s\n' round load delay offered served shed "p99 due" "p99 sent" unanswered errors "rss MiB" alive
    local round i factor delay rate out
    for ((round = 1; round <= ROUNDS; round++)); do
        mapfile -t list < <(modes)
        for ((i = 0; i < ${#list[@]}; i++)); do
            read -r factor delay <<< "${list[$(((i + round - 1) % ${#list[@]}))]}"
            rate=$(awk -v c="$CAP" -v f="$factor" 'BEGIN { printf "%.0f", c * f }')
            start_gateway "$delay"
            out=$(keepalive_load "$rate" "$CONNECTIONS")
            stop_gateway
            printf '%-5s %-5s %-6s %8.0f %8.0f %8.0f %10.1f %10.1f %11d %7d %8s %6s\n' "$round" "${factor}x" "$delay" "$rate" \
                "$(json served_rps "$out")" "$(json shed_rps "$out")" "$(json served_p99_ms "$out")" \
                "$(json served_service_p99_ms "$out")" "$(json unanswered "$out")" \
                "$(($(json errors "$out") + $(json other "$out")))" "$RSS" "$ALIVE" | tee -a "$TMP/keepalive"
        done
    done
    echo "   medians:"
    summarize "$TMP/keepalive" 5 6 7 8 9 10 11 12
}

# h2load_run CONNECTIONS [RATE] -> "succeeded failed seconds p50_ms p99_ms connect_mean_ms connect_max_ms"
h2load_run() {
    local n=$1 rate=${2:-} args=()
    [[ -z $rate ]] || args=(-r "$((rate / 100))" --rate-period=10ms)
    rm -f "$TMP/h2.log"
    taskset -c "$LOAD_CPU" h2load --h1 -c "$n" -n "$n" -m 1 -T 10 -N 10 "${args[@]}" \
        --log-file="$TMP/h2.log" "https://127.0.0.1:$TLS_PORT/hello" > "$TMP/h2.out" 2>&1 || true
    local ok failed secs lat connect
    ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' "$TMP/h2.out")
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^failed/) print $i }' "$TMP/h2.out")
    secs=$(awk '/^finished in/ { v = $3; sub(/s,$/, "", v); print v }' "$TMP/h2.out")
    lat=$(awk -F'\t' '$2 == 200 { print $3 / 1000 }' "$TMP/h2.log" 2>/dev/null | sort -g |
        awk '{ a[NR] = $1 } END { if (NR) printf "%.1f %.1f", a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1]; else print "0 0" }')
    connect=$(awk 'function ms(v) { return v ~ /us$/ ? v / 1000 : v ~ /ms$/ ? v + 0 : v * 1000 }
        /^time for connect:/ { printf "%.1f %.1f", ms($6), ms($5) }' "$TMP/h2.out")
    echo "${ok:-0} ${failed:-0} ${secs:-0} $lat ${connect:-0 0}"
}

tls_flood() {
    cap_cpu "$TLS_QUOTA"
    start_gateway off
    read -r ok _ secs _ < <(h2load_run "$((TLS_SATURATE * DURATION))" "$TLS_SATURATE")
    stop_gateway
    CAP=$(awk -v n="$ok" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    ((CAP > 0)) || { cat "$TMP/h2.out" >&2; die "h2load measured no capacity"; }
    echo "== tls-flood: a full TLS 1.3 handshake per request, worker capped at $TLS_QUOTA% of CPU $PROXY_CPU; capacity (offered $TLS_SATURATE/s, shedding off): $CAP handshakes/s"
    echo "   (served: requests answered a second; refused: connections closed before their handshake, a second; p50/p99: served request, ms; connect: mean/max ms, handshake included)"
    printf '%-5s %-5s %-6s %8s %8s %8s %8s %8s %10s %10s %8s %6s\n' round load delay offered served refused p50 p99 "connect" "max" "rss MiB" alive
    local round i factor delay rate n ok failed secs p50 p99 cmean cmax
    for ((round = 1; round <= ROUNDS; round++)); do
        mapfile -t list < <(modes)
        for ((i = 0; i < ${#list[@]}; i++)); do
            read -r factor delay <<< "${list[$(((i + round - 1) % ${#list[@]}))]}"
            rate=$(awk -v c="$CAP" -v f="$factor" 'BEGIN { printf "%.0f", int(c * f / 100 + 0.5) * 100 }')
            n=$((rate * DURATION))
            start_gateway "$delay"
            read -r ok failed secs p50 p99 cmean cmax < <(h2load_run "$n" "$rate")
            refused=$(metric 'ringgate_connections_shed_total{worker="0"')
            stop_gateway
            printf '%-5s %-5s %-6s %8d %8.0f %8.0f %8.1f %8.1f %10.1f %10.1f %8s %6s\n' "$round" "${factor}x" "$delay" "$rate" \
                "$(awk -v n="$ok" -v s="$secs" 'BEGIN { print (s > 0 ? n / s : 0) }')" \
                "$(awk -v n="${refused:-0}" -v s="$secs" 'BEGIN { print (s > 0 ? n / s : 0) }')" \
                "$p50" "$p99" "$cmean" "$cmax" "$RSS" "$ALIVE" | tee -a "$TMP/tls"
            echo "      (h2load: $ok succeeded, $failed failed in $secs s; gateway refused ${refused:-0})" >&2
        done
    done
    echo "   medians:"
    summarize "$TMP/tls" 5 6 7 8 9 10 11 12
}

summarize() {  # FILE COLUMN...: the median of each column per (load, delay)
    local file=$1 factor delay line c
    shift
    while read -r factor delay; do
        line="   ${factor}x $delay:"
        for c in "$@"; do
            line+=" $(awk -v f="${factor}x" -v d="$delay" -v c="$c" '$2 == f && $3 == d { print $c }' "$file" | median)"
        done
        echo "$line"
    done < <(modes)
}

for s in $SCENARIOS; do
    case $s in
        keep-alive) keepalive ;;
        tls-flood) tls_flood ;;
        *) die "unknown scenario $s (keep-alive, tls-flood)" ;;
    esac
done
