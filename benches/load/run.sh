#!/usr/bin/env bash
# ringgate vs nginx, one pinned worker each, same upstream, same client.
#
# Question answered: on one CPU, does ringgate proxy more requests per second than nginx,
# with no worse p99 latency and less CPU per request?  (Targets: >= 1.3x req/s,
# p99 <= 1.0x, CPU/request <= 0.7x.)  See benches/load/README.md for layout and reading.
#
# Knobs (environment):
#   ROUNDS=5 DURATION=10s WARMUP=2s CONNECTIONS=64 THREADS=1 DRIVER=io_uring|epoll|auto
#   PROXY_CPU=1                       the one CPU for the proxy under test
#   LOAD_CPU=0                        CPU list (taskset -c syntax) for wrk
#   UPSTREAM_CPU=$LOAD_CPU            CPU list for the upstream nginx (one worker per CPU)
#   RINGGATE_BIN=path                 skip `cargo build --release` and use this binary
#   RINGGATE_CONF_EXTRA=file          TOML appended to the generated ringgate config
#   PROXY_UNDER_TEST=ringgate         or nginx-twice: the "ringgate" side is a second
#                                     nginx proxy (tests this script; ratios should be ~1.0)
#   UPSTREAM_PORT=18081 RINGGATE_PORT=18080 NGINX_PORT=18090 ADMIN_PORT=19901
#   PROXY_CPU_QUOTA=                  e.g. 50: cap each proxy at 50% of its CPU (cgroup CPU
#                                     bandwidth) so the proxy, not wrk+upstream, is the
#                                     bottleneck on a 2-core box; see README
#   PROXY_CPU_QUOTA_PERIOD_US=5000    cgroup CPU period (short = shorter throttle stalls)
#   NGINX_BIN=path                    nginx binary (default: from PATH, else /usr/sbin/nginx)
#   KEEP_TMP=1                        keep the temp dir (configs, logs) after the run
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DRIVER=${DRIVER:-io_uring}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UPSTREAM_CPU=${UPSTREAM_CPU:-$LOAD_CPU}
PROXY_UNDER_TEST=${PROXY_UNDER_TEST:-ringgate}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
RINGGATE_PORT=${RINGGATE_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-19901}
RINGGATE_CONF_EXTRA=${RINGGATE_CONF_EXTRA:-}
KEEP_TMP=${KEEP_TMP:-0}
PROXY_CPU_QUOTA=${PROXY_CPU_QUOTA:-}
PROXY_CPU_QUOTA_PERIOD_US=${PROXY_CPU_QUOTA_PERIOD_US:-5000}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS_DIR="$HERE/results"

die() { echo "run.sh: $*" >&2; exit 1; }
warn() { echo "run.sh: warning: $*" >&2; }
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- preflight
# nginx lives in /usr/sbin, which a non-root PATH may lack.
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
missing=()
for tool in wrk taskset awk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -x "$NGINX_BIN" ]] || missing+=(nginx)
if ((${#missing[@]})); then
    die "missing: ${missing[*]}
  Debian/Ubuntu: apt-get install -y wrk nginx util-linux
  (on Debian 12 the 'nginx' package is the server binary; 'nginx-light' also works,
   it only adds the echo module on top of it)"
fi

case "$DRIVER" in io_uring|epoll|auto) ;; *) die "DRIVER must be io_uring, epoll or auto (got $DRIVER)" ;; esac
case "$PROXY_UNDER_TEST" in ringgate|nginx-twice) ;; *) die "PROXY_UNDER_TEST must be ringgate or nginx-twice" ;; esac
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

# expand_cpus "0,2-3" -> "0 2 3"
expand_cpus() {
    local part parts cpus="" c
    IFS=, read -ra parts <<< "$1"
    for part in "${parts[@]}"; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
            for ((c = BASH_REMATCH[1]; c <= BASH_REMATCH[2]; c++)); do cpus+=" $c"; done
        elif [[ "$part" =~ ^[0-9]+$ ]]; then
            cpus+=" $part"
        else
            die "bad CPU list: $1"
        fi
    done
    echo "${cpus# }"
}
ncpu=$(getconf _NPROCESSORS_ONLN)
[[ "$PROXY_CPU" =~ ^[0-9]+$ ]] || die "PROXY_CPU must be a single CPU number"
LOAD_CPUS=$(tr ' ' '\n' <<< "$(expand_cpus "$LOAD_CPU") $(expand_cpus "$UPSTREAM_CPU")" | sort -nu | tr '\n' ' ')
UPSTREAM_WORKERS=$(wc -w <<< "$(expand_cpus "$UPSTREAM_CPU")")
for c in $PROXY_CPU $LOAD_CPUS; do
    ((c < ncpu)) || die "CPU $c does not exist; this machine has $ncpu online"
done
for c in $LOAD_CPUS; do
    ((c != PROXY_CPU)) || die "PROXY_CPU ($PROXY_CPU) must not be in LOAD_CPU/UPSTREAM_CPU"
done

if [[ "$DRIVER" == io_uring && -r /proc/sys/kernel/io_uring_disabled ]]; then
    if [[ "$(cat /proc/sys/kernel/io_uring_disabled)" != 0 ]]; then
        warn "kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled); ringgate may refuse DRIVER=io_uring"
    fi
fi

for port in "$UPSTREAM_PORT" "$RINGGATE_PORT" "$NGINX_PORT" "$ADMIN_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use (set *_PORT to move)"
    fi
done

read -r load1 _ < /proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    warn "load average is $load1: other work on this machine will skew the numbers"
fi

CLK_TCK=$(getconf CLK_TCK)

# cgroup CPU bandwidth for PROXY_CPU_QUOTA: v2 (cpu.max) or v1 (cpu.cfs_*).
CGROUP_KIND=""
CGROUP_BASE=""
if [[ -n "$PROXY_CPU_QUOTA" ]]; then
    [[ "$PROXY_CPU_QUOTA" =~ ^[1-9][0-9]?$ ]] || die "PROXY_CPU_QUOTA must be a percentage 1..99"
    if [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
        CGROUP_KIND=v2 CGROUP_BASE=/sys/fs/cgroup
    elif [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then
        CGROUP_KIND=v1 CGROUP_BASE=/sys/fs/cgroup/cpu
    else
        die "PROXY_CPU_QUOTA needs a writable cgroup cpu controller (v2 with cpu in the root subtree_control, or v1 /sys/fs/cgroup/cpu); run as root"
    fi
fi

if [[ "$PROXY_UNDER_TEST" == ringgate ]]; then
    if [[ -z "${RINGGATE_BIN:-}" ]]; then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet)
        RINGGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ringgate"
    fi
    [[ -x "$RINGGATE_BIN" ]] || die "ringgate binary not found or not executable: $RINGGATE_BIN"
fi

# ---------------------------------------------------------------- processes + cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringgate-load.XXXXXX")
STARTED_PIDS=()
CGROUPS=()
WRK_PID=""

# make_cgroup NAME -> sets MADE_CG to a new cgroup capped at PROXY_CPU_QUOTA % (or "-"
# when no quota was asked for). Not called in $(...): CGROUPS must grow in this shell.
make_cgroup() {
    MADE_CG=-
    [[ -n "$CGROUP_KIND" ]] || return 0
    local cg="$CGROUP_BASE/ringgate-load-$$-$1"
    mkdir "$cg"
    CGROUPS+=("$cg")
    local quota=$((PROXY_CPU_QUOTA_PERIOD_US * PROXY_CPU_QUOTA / 100))
    if [[ "$CGROUP_KIND" == v2 ]]; then
        echo "$quota $PROXY_CPU_QUOTA_PERIOD_US" > "$cg/cpu.max"
    else
        echo "$PROXY_CPU_QUOTA_PERIOD_US" > "$cg/cpu.cfs_period_us"
        echo "$quota" > "$cg/cpu.cfs_quota_us"
    fi
    MADE_CG=$cg
}

# Throttled periods of a cgroup so far (reported so a reader sees the cap was in force).
cgroup_throttled() {
    [[ "$1" != - ]] || { echo 0; return; }
    awk '$1 == "nr_throttled" { print $2 }' "$1/cpu.stat" 2>/dev/null || echo 0
}

cleanup() {
    local pid
    if [[ -n "$WRK_PID" ]]; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local cg
    for cg in "${CGROUPS[@]}"; do
        rmdir "$cg" 2>/dev/null || echo "run.sh: could not remove cgroup $cg" >&2
    done
    if [[ "$KEEP_TMP" == 1 ]]; then
        echo "run.sh: temp dir kept: $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx_conf NAME WORKERS CPU|- BODY  -> writes $TMP/NAME/nginx.conf
# CPU pins the single worker with worker_cpu_affinity; "-" leaves placement to taskset.
# Every path nginx would write to is inside $TMP/NAME so no system nginx state is touched.
nginx_conf() {
    local dir="$TMP/$1" workers=$2 cpu=$3 body=$4 user_line="" affinity=""
    mkdir -p "$dir"
    # Running as root, nginx would switch its workers to 'nobody'; stay root so the
    # temp dirs under $TMP stay writable. As non-root the directive must be absent.
    [[ $EUID -eq 0 ]] && user_line="user root;"
    if [[ "$cpu" != - ]]; then
        # worker_cpu_affinity takes a bit mask whose rightmost digit is CPU 0.
        local mask="1" i
        for ((i = 0; i < cpu; i++)); do mask="${mask}0"; done
        affinity="worker_cpu_affinity $mask;"
    fi
    cat > "$dir/nginx.conf" <<EOF
$user_line
worker_processes $workers;
$affinity
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    server_tokens off;
$body
}
EOF
}

# start_bg LOGNAME CPU CGROUP|- CMD... ; sets STARTED_PID. The subshell joins the cgroup
# (if any) and then execs taskset, which execs the server: $! is the server's PID and the
# server is born inside its cgroup.
start_bg() {
    local logname=$1 cpu=$2 cg=$3
    shift 3
    (
        if [[ "$cg" != - ]]; then echo "$BASHPID" > "$cg/cgroup.procs"; fi
        exec taskset -c "$cpu" "$@"
    ) > "$TMP/$logname.out" 2>&1 &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
}

wait_port() {  # PORT PID NAME
    local port=$1 pid=$2 name=$3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.out" >&2 || true; die "$name exited during startup"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s (log: $TMP/$name.out)"
}

# One plain HTTP/1.1 request over bash's /dev/tcp; checks the proxy really relays.
check_relay() {  # PORT NAME
    local port=$1 name=$2 reply
    # shellcheck disable=SC2016  # $1 expands in the inner bash, on purpose
    reply=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" >&3
        cat <&3' _ "$port" 2>&1) || true
    if [[ "$reply" != "HTTP/1.1 200"* || "$reply" != *"hello world"* ]]; then
        printf '%s\n' "$reply" | head -20 >&2
        die "$name on 127.0.0.1:$port did not answer 200 'hello world' through the upstream"
    fi
}

# CPU time (utime+stime, clock ticks) of a process and its direct children (nginx master
# + worker). /proc/PID/stat of a process already sums all of its threads. The comm field
# may hold spaces, so fields are counted after the last ')': utime/stime are then 12/13.
proc_ticks() {
    local root=$1 total=0 pid t
    for pid in "$root" $(pgrep -P "$root" 2>/dev/null || true); do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# "busy total" jiffies summed over CPUs "N M ..." from /proc/stat (busy = all but idle, iowait).
cpu_jiffies() {
    awk -v list="$1" '
        BEGIN { n = split(list, l, " "); for (i = 1; i <= n; i++) want["cpu" l[i]] = 1 }
        ($1 in want) { t = 0; for (i = 2; i <= 9; i++) t += $i; busy += t - $5 - $6; total += t }
        END { print busy + 0, total + 0 }' /proc/stat
}

# wrk_parse FILE -> "reqs rps p99_ms errors non2xx"
wrk_parse() {
    awk '
        function ms(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return -1
        }
        $1 == "99%"                   { p99 = ms($2) }
        $2 == "requests" && $3 == "in" { reqs = $1 }
        $1 == "Requests/sec:"         { rps = $2 }
        $1 == "Socket" && $2 == "errors:" {
            # Socket errors: connect 0, read 0, write 0, timeout 0
            for (i = 3; i <= NF; i += 2) { v = $(i + 1); sub(/,/, "", v); err += v }
        }
        /^  Non-2xx or 3xx responses:/ { non2xx = $NF }
        END {
            if (reqs == "" || rps == "" || p99 == "") exit 1
            printf "%d %.2f %.3f %d %d\n", reqs, rps, p99, err + 0, non2xx + 0
        }' "$1"
}

# ---------------------------------------------------------------- start servers
log "temp dir $TMP"

nginx_conf upstream "$UPSTREAM_WORKERS" - "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 \"hello world\n\";
        }
    }"

proxy_body() {  # PORT
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:$1 backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same per-request work ringgate always does: pass the client's Host,
            # set the X-Forwarded-* family, and tag request and response with an id.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
        }
    }
EOF
}
nginx_conf nginx 1 "$PROXY_CPU" "$(proxy_body "$NGINX_PORT")"

start_bg upstream "$UPSTREAM_CPU" - "$NGINX_BIN" -p "$TMP/upstream/" -e "$TMP/upstream/error.log" \
    -c "$TMP/upstream/nginx.conf" -g "daemon off;"
UPSTREAM_PID=$STARTED_PID
wait_port "$UPSTREAM_PORT" "$UPSTREAM_PID" upstream

make_cgroup nginx
NGINX_CG=$MADE_CG
start_bg nginx "$PROXY_CPU" "$NGINX_CG" "$NGINX_BIN" -p "$TMP/nginx/" -e "$TMP/nginx/error.log" \
    -c "$TMP/nginx/nginx.conf" -g "daemon off;"
NGINX_PID=$STARTED_PID
wait_port "$NGINX_PORT" "$NGINX_PID" nginx

if [[ "$PROXY_UNDER_TEST" == ringgate ]]; then
    RG_LABEL=ringgate
    cat > "$TMP/ringgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$RINGGATE_PORT"]
workers = 1
driver = "$DRIVER"
cpus = [$PROXY_CPU]

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$UPSTREAM_PORT"]

[[routes]]
name = "all"
path = "/*"
upstream = "backend"
EOF
    if [[ -n "$RINGGATE_CONF_EXTRA" ]]; then
        cat "$RINGGATE_CONF_EXTRA" >> "$TMP/ringgate.toml"
    fi
    # taskset as well as cpus = [...]: the control thread shares the CPU too, as nginx's
    # master does, and the comparison stays one CPU against one CPU.
    make_cgroup ringgate
    RG_CG=$MADE_CG
    RUST_LOG=${RUST_LOG:-warn} start_bg ringgate "$PROXY_CPU" "$RG_CG" \
        "$RINGGATE_BIN" run --config "$TMP/ringgate.toml"
    RG_PID=$STARTED_PID
    wait_port "$RINGGATE_PORT" "$RG_PID" ringgate
else
    RG_LABEL="nginx#2"
    nginx_conf nginx2 1 "$PROXY_CPU" "$(proxy_body "$RINGGATE_PORT")"
    make_cgroup nginx2
    RG_CG=$MADE_CG
    start_bg nginx2 "$PROXY_CPU" "$RG_CG" "$NGINX_BIN" -p "$TMP/nginx2/" -e "$TMP/nginx2/error.log" \
        -c "$TMP/nginx2/nginx.conf" -g "daemon off;"
    RG_PID=$STARTED_PID
    wait_port "$RINGGATE_PORT" "$RG_PID" nginx2
fi

check_relay "$UPSTREAM_PORT" upstream
check_relay "$NGINX_PORT" nginx
check_relay "$RINGGATE_PORT" "$RG_LABEL"

# ---------------------------------------------------------------- runs
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
TSV="$RESULTS_DIR/$STAMP.tsv"
JSON="$RESULTS_DIR/$STAMP.json"
printf 'round\tproxy\trps\tp99_ms\tcpu_us_per_req\trequests\terrors\tnon2xx\tproxy_cpu_busy_pct\tload_cpu_busy_pct\tthrottled_periods\n' > "$TSV"

# wrk in the background + wait: a signal to this script then runs the trap at once
# instead of after wrk's full duration.
run_wrk() {  # OUTFILE WRK-ARGS...
    local out=$1
    shift
    taskset -c "$LOAD_CPU" wrk -t "$THREADS" -c "$CONNECTIONS" "$@" > "$out" &
    WRK_PID=$!
    wait "$WRK_PID"
    WRK_PID=""
}

# measure ROUND NAME PORT PID CGROUP|-
measure() {
    local round=$1 name=$2 port=$3 pid=$4 cg=$5
    local out="$TMP/wrk-$1-${2//[^a-z0-9]/_}.txt"
    local url="http://127.0.0.1:$port/"
    run_wrk /dev/null -d "$WARMUP" "$url"

    local t0 t1 pb0 pt0 pb1 pt1 lb0 lt0 lb1 lt1 th0 th1
    th0=$(cgroup_throttled "$cg")
    t0=$(proc_ticks "$pid")
    read -r pb0 pt0 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb0 lt0 < <(cpu_jiffies "$LOAD_CPUS")
    run_wrk "$out" -d "$DURATION" --latency "$url"
    t1=$(proc_ticks "$pid")
    read -r pb1 pt1 < <(cpu_jiffies "$PROXY_CPU")
    read -r lb1 lt1 < <(cpu_jiffies "$LOAD_CPUS")
    th1=$(cgroup_throttled "$cg")

    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died during round $round"
    local parsed reqs rps p99 errs non2xx
    parsed=$(wrk_parse "$out") || { cat "$out" >&2; die "could not parse wrk output ($out)"; }
    read -r reqs rps p99 errs non2xx <<< "$parsed"
    ((reqs > 0)) || die "$name completed no requests in round $round"
    if ((errs > 0 || non2xx > 0)); then
        warn "$name round $round: $errs socket errors, $non2xx non-2xx responses (numbers suspect)"
    fi
    awk -v r="$round" -v n="$name" -v rps="$rps" -v p99="$p99" -v reqs="$reqs" \
        -v dt=$((t1 - t0)) -v hz="$CLK_TCK" -v e="$errs" -v x="$non2xx" \
        -v pb=$((pb1 - pb0)) -v pt=$((pt1 - pt0)) -v lb=$((lb1 - lb0)) -v lt=$((lt1 - lt0)) \
        -v th=$((th1 - th0)) \
        'BEGIN {
            printf "%s\t%s\t%.2f\t%.3f\t%.3f\t%d\t%d\t%d\t%.1f\t%.1f\t%d\n", r, n, rps, p99,
                dt * 1e6 / hz / reqs, reqs, e, x,
                pt ? 100 * pb / pt : 0, lt ? 100 * lb / lt : 0, th
        }' >> "$TSV"
}

log "$ROUNDS rounds x 2 proxies x ($WARMUP warmup + $DURATION), $CONNECTIONS connections, $THREADS wrk thread(s)"
log "proxy CPU $PROXY_CPU; wrk CPU $LOAD_CPU; upstream CPU $UPSTREAM_CPU ($UPSTREAM_WORKERS workers); ringgate driver $DRIVER"
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then
        measure "$round" "$RG_LABEL" "$RINGGATE_PORT" "$RG_PID" "$RG_CG"
        measure "$round" nginx "$NGINX_PORT" "$NGINX_PID" "$NGINX_CG"
    else
        measure "$round" nginx "$NGINX_PORT" "$NGINX_PID" "$NGINX_CG"
        measure "$round" "$RG_LABEL" "$RINGGATE_PORT" "$RG_PID" "$RG_CG"
    fi
    log "round $round/$ROUNDS done"
done

# ---------------------------------------------------------------- report
echo
echo "Per run (cpu%: busy share of the proxy CPU / of the wrk+upstream CPU during the run)"
awk -F'\t' 'NR == 1 { next }
    NR == 2 { printf "%-5s %-9s %12s %9s %12s %7s %6s %6s\n", "round", "proxy", "req/s", "p99 ms", "cpu us/req", "errors", "cpu%P", "cpu%L" }
    { printf "%-5s %-9s %12.0f %9.3f %12.2f %7d %6.1f %6.1f\n", $1, $2, $3, $4, $5, $7 + $8, $9, $10 }' "$TSV"

# Summary: medians per proxy and the ratios of those medians.
SUMMARY=$(awk -F'\t' -v rg="$RG_LABEL" '
    function median(arr, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j - 1] > arr[j]; j--) { t = arr[j]; arr[j] = arr[j - 1]; arr[j - 1] = t }
        return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    NR == 1 { next }
    $2 == rg    { a++; ar[a] = $3; ap[a] = $4; ac[a] = $5; ae += $7 + $8; abusy[a] = $9; aload[a] = $10 }
    $2 == "nginx" { b++; br[b] = $3; bp[b] = $4; bc[b] = $5; be += $7 + $8; bbusy[b] = $9; bload[b] = $10 }
    END {
        printf "%s %.2f %.3f %.3f %d %.1f %.1f\n", rg, median(ar, a), median(ap, a), median(ac, a), ae, median(abusy, a), median(aload, a)
        printf "nginx %.2f %.3f %.3f %d %.1f %.1f\n", median(br, b), median(bp, b), median(bc, b), be, median(bbusy, b), median(bload, b)
    }' "$TSV")
read -r _ A_RPS A_P99 A_CPU A_ERR A_BUSY A_LOAD <<< "$(sed -n 1p <<< "$SUMMARY")"
read -r _ B_RPS B_P99 B_CPU B_ERR B_BUSY B_LOAD <<< "$(sed -n 2p <<< "$SUMMARY")"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
R_RPS=$(ratio "$A_RPS" "$B_RPS")
R_P99=$(ratio "$A_P99" "$B_P99")
R_CPU=$(ratio "$A_CPU" "$B_CPU")
verdict() { awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? r >= t : r <= t; print (r == "nan" ? "n/a" : ok ? "PASS" : "FAIL") }'; }
V_RPS=$(verdict "$R_RPS" ">=" 1.3)
V_P99=$(verdict "$R_P99" "<=" 1.0)
V_CPU=$(verdict "$R_CPU" "<=" 0.7)

echo
echo "Summary (medians of $ROUNDS rounds)"
printf '%-10s %12s %9s %12s %7s %6s %6s\n' proxy req/s "p99 ms" "cpu us/req" errors cpu%P cpu%L
printf '%-10s %12.0f %9.3f %12.2f %7d %6.1f %6.1f\n' "$RG_LABEL" "$A_RPS" "$A_P99" "$A_CPU" "$A_ERR" "$A_BUSY" "$A_LOAD"
printf '%-10s %12.0f %9.3f %12.2f %7d %6.1f %6.1f\n' nginx "$B_RPS" "$B_P99" "$B_CPU" "$B_ERR" "$B_BUSY" "$B_LOAD"
echo
echo "$RG_LABEL / nginx"
printf '  req/s        %6s   target >= 1.30  %s\n' "$R_RPS" "$V_RPS"
printf '  p99 latency  %6s   target <= 1.00  %s\n' "$R_P99" "$V_P99"
printf '  cpu/request  %6s   target <= 0.70  %s\n' "$R_CPU" "$V_CPU"
if ((A_ERR > 0 || B_ERR > 0)); then
    echo "  NOTE: errors or non-2xx responses were seen; the comparison is not valid as is."
fi
if awk -v l="$A_LOAD" -v m="$B_LOAD" 'BEGIN { exit !(l > 95 || m > 95) }'; then
    echo "  NOTE: the wrk+upstream CPU was saturated (cpu%L > 95); req/s is capped by the load"
    echo "        side rather than the proxy, so the req/s ratio understates the faster proxy."
    echo "        cpu/request is still valid; for req/s rerun with PROXY_CPU_QUOTA=50 (README)."
fi
if [[ -n "$PROXY_CPU_QUOTA" ]]; then
    echo "  proxies capped at $PROXY_CPU_QUOTA% of CPU $PROXY_CPU (period ${PROXY_CPU_QUOTA_PERIOD_US} us);"
    echo "  p99 includes throttle stalls of up to $((PROXY_CPU_QUOTA_PERIOD_US * (100 - PROXY_CPU_QUOTA) / 100)) us for both."
fi
echo "  one-core capacity implied by cpu/request: $RG_LABEL $(awk -v c="$A_CPU" 'BEGIN { printf "%.0f", (c > 0 ? 1e6 / c : 0) }') req/s, nginx $(awk -v c="$B_CPU" 'BEGIN { printf "%.0f", (c > 0 ? 1e6 / c : 0) }') req/s"

jnum() { if [[ "$1" == nan ]]; then echo null; else echo "$1"; fi; }

# JSON written by hand so the script needs nothing beyond coreutils + awk.
{
    printf '{\n  "stamp": "%s",\n  "host": "%s",\n  "kernel": "%s",\n' "$STAMP" "$(hostname)" "$(uname -r)"
    printf '  "params": {"rounds": %d, "duration": "%s", "warmup": "%s", "connections": %d, "threads": %d, "driver": "%s", "proxy_cpu": %d, "load_cpu": "%s", "upstream_cpu": "%s", "proxy_cpu_quota_pct": %s, "proxy_under_test": "%s"},\n' \
        "$ROUNDS" "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS" "$DRIVER" "$PROXY_CPU" "$LOAD_CPU" "$UPSTREAM_CPU" "${PROXY_CPU_QUOTA:-null}" "$PROXY_UNDER_TEST"
    printf '  "runs": [\n'
    awk -F'\t' 'NR > 1 {
        printf "%s    {\"round\": %d, \"proxy\": \"%s\", \"rps\": %s, \"p99_ms\": %s, \"cpu_us_per_req\": %s, \"requests\": %d, \"errors\": %d, \"non2xx\": %d, \"proxy_cpu_busy_pct\": %s, \"load_cpu_busy_pct\": %s, \"throttled_periods\": %d}",
            (NR > 2 ? ",\n" : ""), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }
        END { printf "\n" }' "$TSV"
    printf '  ],\n  "median": {\n'
    printf '    "%s": {"rps": %s, "p99_ms": %s, "cpu_us_per_req": %s},\n' "$RG_LABEL" "$A_RPS" "$A_P99" "$A_CPU"
    printf '    "nginx": {"rps": %s, "p99_ms": %s, "cpu_us_per_req": %s}\n  },\n' "$B_RPS" "$B_P99" "$B_CPU"
    printf '  "ratio": {"rps": %s, "p99": %s, "cpu_per_req": %s},\n' "$(jnum "$R_RPS")" "$(jnum "$R_P99")" "$(jnum "$R_CPU")"
    printf '  "verdict": {"rps": "%s", "p99": "%s", "cpu_per_req": "%s"}\n}\n' "$V_RPS" "$V_P99" "$V_CPU"
} > "$JSON"

echo
echo "results: $TSV"
echo "         $JSON"
