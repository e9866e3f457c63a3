#!/usr/bin/env bash
# Load bench, "limited" scenario: what rate-limit checks cost under load. Question: with
# limits high enough never to refuse, does a limited route keep its throughput within 5%
# of plain proxying, and what do the checks add to p99 and to CPU per request?
#
# Two ringgate processes, one worker each, both pinned to PROXY_CPU and running the whole
# time, forward the same route to the same nginx upstream; only the "limited" one has
# `limits = LIMITS` on it (default: route and ip keys at 10,000,000/s). wrk (on LOAD_CPU)
# measures both in every round, alternating which goes first, as run.sh does with nginx.
#
#   benches/load/limits.sh                       # ROUNDS=5 DURATION=10s WARMUP=2s
#   PROXY_CPU_QUOTA=50 benches/load/limits.sh    # req/s with the proxy the bottleneck
#
# Knobs (environment):
#   ROUNDS=5 DURATION=10s WARMUP=2s CONNECTIONS=64 THREADS=1 DRIVER=io_uring|epoll|auto
#   PROXY_CPU=1 LOAD_CPU=0            the gateways' CPU; wrk's and the upstream's CPU
#   LIMITS='[ { key = "route", rate = "10000000/s" }, { key = "ip", rate = "10000000/s" } ]'
#   RINGGATE_BIN=path                 skip `cargo build --release` and use this binary
#   PROXY_CPU_QUOTA=                  e.g. 50: cap each gateway at 50% of PROXY_CPU (cgroup
#                                     CPU bandwidth, needs root), so on a 2-core box the
#                                     gateway rather than wrk+upstream limits req/s (README)
#   PROXY_CPU_QUOTA_PERIOD_US=5000
#   PLAIN_PORT=28280 LIMITED_PORT=28281 UPSTREAM_PORT=28282 ADMIN_PORT=28283 (and +1)
#   NGINX_BIN=path KEEP_TMP=1
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DRIVER=${DRIVER:-io_uring}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
LIMITS=${LIMITS:-'[ { key = "route", rate = "10000000/s" }, { key = "ip", rate = "10000000/s" } ]'}
# Other scenarios (protected.sh) swap in their own route lines and name.
SCENARIO=${SCENARIO:-limited}
ROUTE_EXTRA=${ROUTE_EXTRA:-"limits = $LIMITS"}
EXPECT_RATELIMIT=${EXPECT_RATELIMIT:-1}
PLAIN_ADMIN_EXTRA=${PLAIN_ADMIN_EXTRA:-}   # e.g. "metrics = false" (logged.sh)
PROXY_CPU_QUOTA=${PROXY_CPU_QUOTA:-}
PROXY_CPU_QUOTA_PERIOD_US=${PROXY_CPU_QUOTA_PERIOD_US:-5000}
PLAIN_PORT=${PLAIN_PORT:-28280}
LIMITED_PORT=${LIMITED_PORT:-28281}
UPSTREAM_PORT=${UPSTREAM_PORT:-28282}
ADMIN_PORT=${ADMIN_PORT:-28283}
KEEP_TMP=${KEEP_TMP:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
die() { echo "limits.sh: $*" >&2; exit 1; }
warn() { echo "limits.sh: warning: $*" >&2; }
log() { echo "== $*" >&2; }

NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in wrk taskset awk curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx curl)"
done
[[ -x "$NGINX_BIN" ]] || die "nginx not found (apt-get install -y nginx)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
for port in "$PLAIN_PORT" "$LIMITED_PORT" "$UPSTREAM_PORT" "$ADMIN_PORT" $((ADMIN_PORT + 1)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use (set *_PORT to move)"
    fi
done
read -r load1 _ < /proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    warn "load average is $load1: other work on this machine will skew the numbers"
fi

# shellcheck source=common.sh
source "$HERE/common.sh"
cgroup_setup

if [[ -z "${RINGGATE_BIN:-}" ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    RINGGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringgate"
fi
[[ -x "$RINGGATE_BIN" ]] || die "ringgate binary not found: $RINGGATE_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringgate-limits.XXXXXX")
PIDS=()
CGROUPS=()
WRK_PID=""
cleanup() {
    local p cg
    if [[ -n "$WRK_PID" ]]; then kill "$WRK_PID" 2>/dev/null || true; fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || warn "could not remove cgroup $cg"; done
    if [[ "$KEEP_TMP" == 1 ]]; then echo "limits.sh: temp dir kept: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOG CPU CGROUP|- CMD... -> STARTED_PID (the server itself, born in its cgroup)
start_bg() {
    local logname=$1 cpu=$2 cg=$3
    shift 3
    (
        if [[ "$cg" != - ]]; then echo "$BASHPID" > "$cg/cgroup.procs"; fi
        exec taskset -c "$cpu" "$@"
    ) > "$TMP/$logname.out" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

wait_port() {  # PORT PID NAME
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || { cat "$TMP/$3.out" >&2; die "$3 exited during startup"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$3 did not listen on 127.0.0.1:$1 within 10 s"
}

# ---------------------------------------------------------------- servers
mkdir -p "$TMP/up"
cat > "$TMP/up/nginx.conf" <<CONF
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_processes 1;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/up/client_body;
    proxy_temp_path $TMP/up/proxy;
    fastcgi_temp_path $TMP/up/fastcgi;
    uwsgi_temp_path $TMP/up/uwsgi;
    scgi_temp_path $TMP/up/scgi;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        location / { default_type text/plain; return 200 "hello world\n"; }
    }
}
CONF
start_bg upstream "$LOAD_CPU" - "$NGINX_BIN" -p "$TMP/up/" -e "$TMP/up/error.log" \
    -c "$TMP/up/nginx.conf" -g "daemon off;"
wait_port "$UPSTREAM_PORT" "$STARTED_PID" upstream

gateway_conf() {  # PORT ADMIN_PORT ROUTE-LINES [ADMIN-LINES]
    cat <<CONF
[server]
listen = ["127.0.0.1:$1"]
workers = 1
driver = "$DRIVER"
cpus = [$PROXY_CPU]
[admin]
listen = "127.0.0.1:$2"
${4:-}
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$UPSTREAM_PORT"]
[[routes]]
name = "all"
path = "/*"
upstream = "backend"
$3
CONF
}
gateway_conf "$PLAIN_PORT" "$ADMIN_PORT" "" "$PLAIN_ADMIN_EXTRA" > "$TMP/plain.toml"
gateway_conf "$LIMITED_PORT" $((ADMIN_PORT + 1)) "$ROUTE_EXTRA" > "$TMP/$SCENARIO.toml"
declare -A PORT PID CG
PORT[plain]=$PLAIN_PORT
PORT[$SCENARIO]=$LIMITED_PORT
for s in plain "$SCENARIO"; do
    "$RINGGATE_BIN" check --config "$TMP/$s.toml" >/dev/null || die "$s config rejected"
    make_cgroup "$s"
    CG[$s]=$MADE_CG
    RUST_LOG=${RUST_LOG:-warn} start_bg "$s" "$PROXY_CPU" "${CG[$s]}" \
        "$RINGGATE_BIN" run --config "$TMP/$s.toml"
    PID[$s]=$STARTED_PID
    wait_port "${PORT[$s]}" "${PID[$s]}" "$s"
done

# Both relay to the upstream; only the limited one answers with RateLimit headers.
for s in plain "$SCENARIO"; do
    reply=$(curl -si --max-time 5 "http://127.0.0.1:${PORT[$s]}/") || true
    [[ "$reply" == "HTTP/1.1 200"* && "$reply" == *"hello world"* ]] ||
        { printf '%s\n' "$reply" >&2; die "$s did not answer 200 'hello world'"; }
    has=0
    grep -qi '^ratelimit:' <<< "$reply" && has=1
    [[ "$s" == "$SCENARIO" && $has == "$EXPECT_RATELIMIT" || "$s" == plain && $has == 0 ]] ||
        { printf '%s\n' "$reply" >&2; die "$s: RateLimit headers expected only on the limited gateway"; }
done

# ---------------------------------------------------------------- runs
CLK_TCK=$(getconf CLK_TCK)
run_wrk() {  # OUT ARGS... (in the background, so a signal reaches the trap at once)
    local out=$1
    shift
    taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNECTIONS" "$@" > "$out" &
    WRK_PID=$!
    wait "$WRK_PID"
    WRK_PID=""
}

RESULTS="$TMP/results"
: > "$RESULTS"
measure() {  # ROUND SCENARIO
    local round=$1 s=$2 out="$TMP/wrk-$1-$2.txt" url="http://127.0.0.1:${PORT[$2]}/"
    run_wrk /dev/null -d "$WARMUP" "$url"
    local t0 t1 pb0 pt0 pb1 pt1 lb0 lt0 lb1 lt1
    t0=$(proc_ticks "${PID[$s]}")
    read -r pb0 pt0 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb0 lt0 < <(cpu_jiffies "$LOAD_CPU")
    run_wrk "$out" -d "$DURATION" --latency "$url"
    t1=$(proc_ticks "${PID[$s]}")
    read -r pb1 pt1 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb1 lt1 < <(cpu_jiffies "$LOAD_CPU")
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during round $round"
    local parsed reqs rps p99 errs non2xx
    parsed=$(wrk_parse "$out") || { cat "$out" >&2; die "could not parse wrk output ($out)"; }
    read -r reqs rps p99 errs non2xx <<< "$parsed"
    ((errs + non2xx == 0)) || warn "$s round $round: $errs socket errors, $non2xx non-2xx (a 429 means a limit triggered)"
    awk -v r="$round" -v s="$s" -v rps="$rps" -v p99="$p99" -v reqs="$reqs" -v dt=$((t1 - t0)) \
        -v hz="$CLK_TCK" -v e=$((errs + non2xx)) -v pb=$((pb1 - pb0)) -v pt=$((pt1 - pt0)) \
        -v lb=$((lb1 - lb0)) -v lt=$((lt1 - lt0)) 'BEGIN {
            printf "%-5s %-8s %10.0f %8.3f %10.2f %6d %6.1f %6.1f\n", r, s, rps, p99,
                dt * 1e6 / hz / reqs, e, pt ? 100 * pb / pt : 0, lt ? 100 * lb / lt : 0
        }' | tee -a "$RESULTS"
}

log "$ROUNDS rounds x (plain, $SCENARIO), $WARMUP warmup + $DURATION, $CONNECTIONS connections; gateways on CPU $PROXY_CPU${PROXY_CPU_QUOTA:+ capped at $PROXY_CPU_QUOTA%}, wrk+upstream on CPU $LOAD_CPU"
log "$SCENARIO: $ROUTE_EXTRA"
echo "(cpu%P / cpu%L: busy share of the gateways' CPU / of the wrk+upstream CPU during the run)"
printf '%-5s %-8s %10s %8s %10s %6s %6s %6s\n' round scenario req/s "p99 ms" "cpu us/req" errors cpu%P cpu%L
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="plain $SCENARIO"; else order="$SCENARIO plain"; fi
    for s in $order; do measure "$round" "$s"; done
done

echo
echo "Medians of $ROUNDS rounds"
printf '%-8s %10s %8s %10s %6s %6s\n' scenario req/s "p99 ms" "cpu us/req" errors cpu%L
declare -A MED
for s in plain "$SCENARIO"; do
    col() { awk -v s="$s" -v c="$1" '$2 == s { print $c }' "$RESULTS" | median; }
    rps=$(col 3) p99=$(col 4) us=$(col 5) load=$(col 8)
    errs=$(awk -v s="$s" '$2 == s { t += $6 } END { print t + 0 }' "$RESULTS")
    printf '%-8s %10.0f %8.3f %10.2f %6d %6.1f\n' "$s" "$rps" "$p99" "$us" "$errs" "$load"
    MED[$s,rps]=$rps MED[$s,p99]=$p99 MED[$s,us]=$us MED[$s,load]=$load
done
echo
awk -v a="${MED[$SCENARIO,rps]}" -v b="${MED[plain,rps]}" -v c="${MED[$SCENARIO,p99]}" \
    -v d="${MED[plain,p99]}" -v e="${MED[$SCENARIO,us]}" -v f="${MED[plain,us]}" -v n="$SCENARIO" 'BEGIN {
    printf "%s / plain\n", n
    printf "  req/s        %.3f   target >= 0.95  %s\n", a / b, (a / b >= 0.95) ? "PASS" : "FAIL"
    printf "  p99 latency  %.3f\n", c / d
    printf "  cpu/request  %.3f   (+%.2f us a request)\n", e / f, e - f
}'
if awk -v l="${MED[plain,load]}" -v m="${MED[$SCENARIO,load]}" 'BEGIN { exit !(l > 95 || m > 95) }'; then
    echo "  NOTE: the wrk+upstream CPU was saturated (cpu%L > 95): req/s is capped by the load"
    echo "        side, so the req/s ratio hides the checks' cost; cpu/request still shows it."
    echo "        For req/s rerun with PROXY_CPU_QUOTA=50 (README)."
fi
if [[ -n "$PROXY_CPU_QUOTA" ]]; then
    echo "  gateways capped at $PROXY_CPU_QUOTA% of CPU $PROXY_CPU: p99 includes throttle stalls; use the uncapped run's."
fi
