#!/usr/bin/env bash
# Overload: ringgate offered twice what it can serve.
#
# Question answered: offered 2x its capacity by many independent clients, does one worker
# shed early and cheaply (503 overloaded, counted), keep the latency of what it admits
# bounded, keep its memory bounded, and stay up? And does it leave a load it can carry
# (0.8x) alone? The same 2x load with shedding off (`max_loop_delay = "off"`) shows what
# shedding buys.
#
# Method: one worker pinned to PROXY_CPU, capped at PROXY_CPU_QUOTA% of it (cgroup CPU
# bandwidth) so that the load generator and the upstream, on LOAD_CPU, can offer twice
# the worker's capacity on a 2-core box. Capacity = what the worker serves to a closed
# loop of CONNECTIONS connections with shedding off (loadgen --rate 0). Then, per round, each mode with a fresh
# gateway: CONNECTIONS clients (keep-alive connections, each an open-loop client sending
# on its own schedule: examples/loadgen.rs) at 0.8x and 2x capacity; latency counts from
# when each request was due, so falling behind shows. Reports served and shed rates,
# served p99, requests unanswered at the end (due but not answered: the backlog), errors, the gateway's RSS at the end and whether it stayed up; medians of
# ROUNDS rounds.
#
# Knobs: ROUNDS=3 DURATION=20 WARMUP=3 CONNECTIONS=4000 PROXY_CPU=1 LOAD_CPU=0
#   PROXY_CPU_QUOTA=25 PROXY_CPU_QUOTA_PERIOD_US=5000 MAX_LOOP_DELAY=50ms DRIVER=io_uring
#   GW_PORT=18480 ADMIN_PORT=19480 UP_PORT=18481 RINGGATE_BIN=path KEEP_TMP=1
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-4000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU_QUOTA=${PROXY_CPU_QUOTA:-25}
PROXY_CPU_QUOTA_PERIOD_US=${PROXY_CPU_QUOTA_PERIOD_US:-5000}
MAX_LOOP_DELAY=${MAX_LOOP_DELAY:-50ms}
DRIVER=${DRIVER:-io_uring}
GW_PORT=${GW_PORT:-18480}
ADMIN_PORT=${ADMIN_PORT:-19480}
UP_PORT=${UP_PORT:-18481}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
die() { echo "overload.sh: $*" >&2; exit 1; }
for tool in nginx taskset curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx curl)"
done
(( $(ulimit -Hn) > 2 * CONNECTIONS + 1000 )) || die "the open-file limit ($(ulimit -Hn)) is too low for $CONNECTIONS connections"
ulimit -n "$(ulimit -Hn)"
# shellcheck source=common.sh
source "$HERE/common.sh"
bench_start overload
cargo build --release --quiet --example loadgen
LOADGEN=$(realpath target/release/examples/loadgen)
cgroup_setup
make_cgroup gateway
CG=$MADE_CG
trap 'bench_cleanup; [[ $CG == - ]] || rmdir "$CG" 2>/dev/null || true' EXIT

start_upstream_nginx "$TMP/up" "$UP_PORT" "$LOAD_CPU"

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
stop_gateway() { kill "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; }

loadgen() {  # RATE CONNECTIONS -> JSON line
    taskset -c "$LOAD_CPU" "$LOADGEN" --target "127.0.0.1:$GW_PORT" --rate "$1" \
        --connections "$2" --duration "$DURATION" --warmup "$WARMUP" --path /hello | tail -1
}
json() { sed -E "s/.*\"$1\":([-0-9.]+).*/\\1/" <<< "$2"; }
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { print $2; exit }'; }

echo "== capacity: one worker on CPU $PROXY_CPU capped at $PROXY_CPU_QUOTA%, closed loop, $CONNECTIONS connections, shedding off"
start_gateway off
CAP=$(json served_rps "$(loadgen 0 "$CONNECTIONS")")
stop_gateway
echo "capacity: $CAP req/s"

: > "$TMP/results"
MODES=("0.8 $MAX_LOOP_DELAY" "2 $MAX_LOOP_DELAY" "2 off")
printf '%-5s %-6s %-8s %9s %9s %9s %10s %10s %7s %9s %6s\n' round load delay offered served shed "p99 ms" unanswered errors "rss MiB" alive
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < ${#MODES[@]}; i++)); do
        read -r factor delay <<< "${MODES[$(((i + round - 1) % ${#MODES[@]}))]}"
        rate=$(awk -v c="$CAP" -v f="$factor" 'BEGIN { printf "%.0f", c * f }')
        start_gateway "$delay"
        out=$(loadgen "$rate" "$CONNECTIONS")
        alive=yes
        kill -0 "$GW" 2>/dev/null || alive=NO
        rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$GW/status" 2>/dev/null || echo 0)
        shed_counted=$(metric 'ringgate_requests_shed_total{worker="0"')
        stop_gateway
        printf '%-5s %-6s %-8s %9.0f %9.0f %9.0f %10.2f %10d %7d %9s %6s\n' "$round" "${factor}x" "$delay" \
            "$rate" "$(json served_rps "$out")" "$(json shed_rps "$out")" "$(json served_p99_ms "$out")" \
            "$(json unanswered "$out")" "$(( $(json errors "$out") + $(json other "$out") ))" "$rss" "$alive" | tee -a "$TMP/results"
        echo "      (gateway counted ${shed_counted:-?} shed; loadgen: $out)" >&2
    done
done

echo
echo "Medians of $ROUNDS rounds (capacity $CAP req/s)"
printf '%-6s %-8s %9s %9s %10s %10s %7s %9s\n' load delay served shed "p99 ms" unanswered errors "rss MiB"
for mode in "${MODES[@]}"; do
    read -r factor delay <<< "$mode"
    col() { awk -v f="${factor}x" -v d="$delay" -v c="$1" '$2 == f && $3 == d { print $c }' "$TMP/results" | median; }
    errs=$(awk -v f="${factor}x" -v d="$delay" '$2 == f && $3 == d { t += $9 } END { print t + 0 }' "$TMP/results")
    printf '%-6s %-8s %9.0f %9.0f %10.2f %10.0f %7d %9.1f\n' "${factor}x" "$delay" "$(col 5)" "$(col 6)" "$(col 7)" "$(col 8)" "$errs" "$(col 10)"
done
