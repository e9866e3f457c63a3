# Shell helpers shared by the load-bench scripts (sourced, not run). They expect the
# caller's `die`, `TMP`, `PROXY_CPU_QUOTA`, `PROXY_CPU_QUOTA_PERIOD_US` and a `CGROUPS`
# array (whose entries the caller's cleanup removes); `bench_start` sets up `TMP`,
# `PIDS` and the exit trap for the scripts that use no cgroups.

# cgroup CPU bandwidth: v2 cpu.max or v1 cpu.cfs_*. Sets CGROUP_KIND and CGROUP_BASE
# (empty without a quota).
cgroup_setup() {
    CGROUP_KIND="" CGROUP_BASE=""
    [[ -n "$PROXY_CPU_QUOTA" ]] || return 0
    [[ "$PROXY_CPU_QUOTA" =~ ^[1-9][0-9]?$ ]] || die "PROXY_CPU_QUOTA must be a percentage 1..99"
    if [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
        CGROUP_KIND=v2 CGROUP_BASE=/sys/fs/cgroup
    elif [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then
        CGROUP_KIND=v1 CGROUP_BASE=/sys/fs/cgroup/cpu
    else
        die "PROXY_CPU_QUOTA needs a writable cgroup cpu controller; run as root"
    fi
}

# make_cgroup NAME -> MADE_CG (a cgroup capped at PROXY_CPU_QUOTA %, or "-").
make_cgroup() {
    MADE_CG=-
    [[ -n "$CGROUP_KIND" ]] || return 0
    local cg="$CGROUP_BASE/ringgate-bench-$$-$1" quota=$((PROXY_CPU_QUOTA_PERIOD_US * PROXY_CPU_QUOTA / 100))
    mkdir "$cg"
    CGROUPS+=("$cg")
    if [[ "$CGROUP_KIND" == v2 ]]; then
        echo "$quota $PROXY_CPU_QUOTA_PERIOD_US" > "$cg/cpu.max"
    else
        echo "$PROXY_CPU_QUOTA_PERIOD_US" > "$cg/cpu.cfs_period_us"
        echo "$quota" > "$cg/cpu.cfs_quota_us"
    fi
    MADE_CG=$cg
}

# User + system CPU clock ticks of a process (all its threads).
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

cpu_jiffies() {  # CPU-LIST (one number or a,b) -> "busy total"
    awk -v list="${1//,/ }" '
        BEGIN { n = split(list, l, " "); for (i = 1; i <= n; i++) want["cpu" l[i]] = 1 }
        ($1 in want) { t = 0; for (i = 2; i <= 9; i++) t += $i; busy += t - $5 - $6; total += t }
        END { print busy + 0, total + 0 }' /proc/stat
}

wrk_parse() {  # FILE -> "reqs rps p99_ms errors non2xx"
    awk '
        function ms(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            return u == "us" ? n / 1000 : u == "ms" ? n : u == "s" ? n * 1000 : -1
        }
        $1 == "99%" { p99 = ms($2) }
        $2 == "requests" && $3 == "in" { reqs = $1 }
        $1 == "Requests/sec:" { rps = $2 }
        $1 == "Socket" && $2 == "errors:" { for (i = 3; i <= NF; i += 2) { v = $(i + 1); sub(/,/, "", v); err += v } }
        /^  Non-2xx or 3xx responses:/ { non2xx = $NF }
        END {
            if (reqs == "" || rps == "" || p99 == "") exit 1
            printf "%d %.2f %.3f %d %d\n", reqs, rps, p99, err + 0, non2xx + 0
        }' "$1"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# nginx_prelude DIR WORKER_CONNECTIONS: the top of an nginx.conf that keeps every path
# nginx writes inside DIR (no system nginx state touched), up to the open `http {`.
nginx_prelude() {
    local dir=$1 conns=$2
    cat <<CONF
$([[ $EUID -eq 0 ]] && echo "user root;")
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections $conns; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000000;
CONF
}

# start_upstream_nginx DIR PORT CPU [STATUS_PORT]: the "hello world" upstream every
# scenario forwards to, one nginx worker on CPU, in the background (its pid joins PIDS);
# with STATUS_PORT, its stub_status (accepted connections) at /status there too.
# Body scenarios: /body/16k, /body/256k and /body/4m are static files of that size, and
# /sink reads (and drops) any request body and answers "stored".
start_upstream_nginx() {
    local dir=$1 port=$2 cpu=$3 status=${4:-} size
    mkdir -p "$dir/body"
    for size in 16k 256k 4m; do
        head -c "$(numfmt --from=iec "${size^^}")" /dev/zero | tr '\0' x > "$dir/body/$size"
    done
    {
        nginx_prelude "$dir" 4096
        [[ -z "$status" ]] || echo "    server { listen 127.0.0.1:$status; location = /status { stub_status; } }"
        cat <<CONF
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { return 200 "hello world\n"; }
        location /body/ { root $dir; }
        location = /sink { return 200 "stored\n"; }
    }
}
CONF
    } > "$dir/nginx.conf"
    taskset -c "$cpu" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" &
    PIDS+=($!)
}

# bench_start NAME: what every peer-comparison script starts with, after its knobs and
# `die`: $RINGGATE_BIN as an absolute path (built with `cargo build --release` unless
# given), $TMP (a fresh directory, removed at exit unless KEEP_TMP=1), and $PIDS, the
# background processes the exit trap stops.
bench_start() {
    if [[ -z "${RINGGATE_BIN:-}" ]]; then
        cargo build --release --quiet
        RINGGATE_BIN=target/release/ringgate
    fi
    RINGGATE_BIN=$(realpath "$RINGGATE_BIN")
    TMP=$(mktemp -d "/tmp/ringgate-$1.XXXXXX")
    PIDS=()
    CGROUPS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ "${KEEP_TMP:-0}" == 1 ]] || rm -rf "$TMP"
}

# wait_relaying NAME URL: waits up to 10 s for URL (through the proxy NAME) to answer,
# then dies unless it relays the upstream's "hello world".
wait_relaying() {
    local name=$1 url=$2
    for _ in $(seq 100); do
        curl -skf -o /dev/null "$url" && break
        sleep 0.1
    done
    curl -skf "$url" | grep -q "hello world" || die "$name does not relay $url (see $TMP)"
}

# A proxy's processes (itself and its children: nginx's worker), their CPU ticks and RSS.
procs() { echo "$1" $(pgrep -P "$1" 2>/dev/null || true); }
ticks() { local t=0 p; for p in $(procs "$1"); do t=$((t + $(proc_ticks "$p"))); done; echo "$t"; }
rss_kib() { local r=0 p; for p in $(procs "$1"); do r=$((r + $(awk '/^VmRSS/ { print $2 }' "/proc/$p/status"))); done; echo "$r"; }

# backend_route UP_PORT: the end of a one-route ringgate config: the "backend" upstream
# and a route sending every path to it.
backend_route() {
    cat <<CONF
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$1"]
[[routes]]
name = "all"
path = "/*"
upstream = "backend"
CONF
}

# nginx_keepalive_upstream UP_PORT: the `upstream` block nginx users write for a
# keep-alive pool to the origin (never a cap at the benches' connection counts).
nginx_keepalive_upstream() {
    cat <<CONF
    upstream backend {
        server 127.0.0.1:$1;
        keepalive 4096;
        keepalive_requests 1000000000;
    }
CONF
}

# signed_gateway_head GW_PORT ADMIN_PORT UP_PORT DRIVER: the config every signed-request
# scenario starts from: one worker on PROXY_CPU, `apps.toml` beside it (an hour's window,
# so pre-signed requests stay valid), and the "backend" upstream. Routes follow.
signed_gateway_head() {
    cat <<CONF
[server]
listen = ["127.0.0.1:$1"]
workers = 1
cpus = [$PROXY_CPU]
driver = "$4"
[admin]
listen = "127.0.0.1:$2"
[apps]
file = "apps.toml"
timestamp_window = "1h"
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:$3"]
CONF
}

# wrk_signed LINES-FILE PATH SECONDS OUT [wrk args...]: wrk through auth.lua, sending the
# pre-signed lines of LINES-FILE for PATH (KEY, TS, THREADS, CONNECTIONS, LOAD_CPU and
# GW_PORT from the caller).
wrk_signed() {
    local lines=$1 path=$2 secs=$3 out=$4
    shift 4
    SIGNED_FILE=$lines REQ_PATH=$path APP_KEY=$KEY APP_TS=$TS WRK_THREADS=$THREADS \
        taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" "$@" \
        -s benches/load/auth.lua "http://127.0.0.1:$GW_PORT" > "$out"
}
