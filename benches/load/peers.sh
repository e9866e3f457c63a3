#!/usr/bin/env bash
# Load bench "peers": ringgate against nginx and HAProxy configured as their users run
# them, one pinned worker each, the same upstream, swept over client connections.
#
# Question: with 64, 256, 1024 and 4096 keep-alive client connections, how do ringgate's
# req/s, p50/p99 latency, CPU per request, syscalls per request, RSS and new origin
# connections compare with nginx's and HAProxy's, with every proxy's default behaviour
# and nothing added to the peers that their users would not configure?
#
# - nginx: `proxy_pass` to an `upstream` with `keepalive 4096` (never a cap at these
#   sweeps), `proxy_http_version 1.1`, `proxy_set_header Connection ""`; nothing else.
# - HAProxy: `mode http`, `http-reuse always`, `nbthread 1`; nothing else.
# - ringgate: its default config (one route, one upstream), which adds X-Forwarded-For,
#   -Proto, -Host and X-Request-Id upstream and X-Request-Id to the client, as always.
# HEADERS=1 runs the header-heavy variant instead: the peers set those headers too.
# BODY=16k|256k|4m: responses of that size instead of "hello world" (a static file on
# the upstream; nginx keeps its default proxy buffering). UPLOAD=16k|256k|4m: each
# request POSTs a body of that size (nginx keeps its default request buffering, with
# `client_max_body_size 8m`, ringgate's default limit, so it accepts them).
#
# Layout: the proxy under test alone on PROXY_CPU; wrk and the upstream nginx on
# LOAD_CPU. Every proxy runs the whole time (idle when not measured); rounds alternate
# the order. New origin connections are read from the upstream's own accept counter
# (stub_status), the same way for every proxy. Syscalls per request come from a
# separate short run under `strace -c -f` (it slows the proxy; the count per request is
# what it is for). RSS is sampled halfway through each measured run.
#
#   benches/load/peers.sh                         # ~10 min with the defaults
#   SWEEP="64 256" ROUNDS=5 benches/load/peers.sh
#
# Knobs: ROUNDS=3 DURATION=6 WARMUP=2 SWEEP="64 256 1024 4096" THREADS=1 PROXY_CPU=1
#   LOAD_CPU=0 DRIVER=io_uring PROXIES="ringgate nginx haproxy" SYSCALLS=1 HEADERS=0
#   BODY= UPLOAD=
#   RINGGATE_BIN= (default: cargo build --release) RINGGATE_EXTRA= (TOML for [server])
#   IDLE_CONNS=9000 (then RSS per idle keep-alive connection, idle_conns.py; 0: skip;
#   SWEEP="" measures only that, on proxies that served nothing before)
#   UP_PORT=28581 RG_PORT=28580 NGINX_PORT=28590 HAPROXY_PORT=28600 ADMIN_PORT=28582
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
SWEEP=${SWEEP-64 256 1024 4096}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DRIVER=${DRIVER:-io_uring}
PROXIES=${PROXIES:-ringgate nginx haproxy}
SYSCALLS=${SYSCALLS:-1}
HEADERS=${HEADERS:-0}
BODY=${BODY:-}
UPLOAD=${UPLOAD:-}
IDLE_CONNS=${IDLE_CONNS:-9000}
RINGGATE_EXTRA=${RINGGATE_EXTRA:-}
UP_PORT=${UP_PORT:-28581}
RG_PORT=${RG_PORT:-28580}
ADMIN_PORT=${ADMIN_PORT:-28582}
NGINX_PORT=${NGINX_PORT:-28590}
HAPROXY_PORT=${HAPROXY_PORT:-28600}
PROXY_CPU_QUOTA=""
PROXY_CPU_QUOTA_PERIOD_US=5000

die() { echo "peers.sh: $*" >&2; exit 1; }
for tool in wrk nginx haproxy taskset curl strace; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx haproxy curl strace)"
done
ulimit -n "$(ulimit -Hn)"
most=${SWEEP##* }
(( $(ulimit -n) >= 2 * ${most:-0} + 100 && $(ulimit -n) >= IDLE_CONNS + 100 )) || die "open-file limit $(ulimit -n) is too low"
# shellcheck source=common.sh
source "$HERE/common.sh"
bench_start peers
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- the upstream
# Its accept counter (stub_status) on a second port, outside the measured path.
start_upstream_nginx "$TMP/up" "$UP_PORT" "$LOAD_CPU" $((UP_PORT + 1000))
upstream_accepts() { curl -s "http://127.0.0.1:$((UP_PORT + 1000))/status" | awk 'NR == 3 { print $1 }'; }

# ---------------------------------------------------------------- what wrk asks
TARGET=/
WRK_SCRIPT=()
if [[ -n "$BODY" ]]; then
    [[ "$BODY" =~ ^(16k|256k|4m)$ ]] || die "BODY is 16k, 256k or 4m"
    TARGET=/body/$BODY
fi
if [[ -n "$UPLOAD" ]]; then
    [[ "$UPLOAD" =~ ^(16k|256k|4m)$ ]] || die "UPLOAD is 16k, 256k or 4m"
    [[ -z "$BODY" ]] || die "BODY and UPLOAD are separate scenarios"
    TARGET=/sink
    cat > "$TMP/upload.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $(numfmt --from=iec "${UPLOAD^^}"))
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
    WRK_SCRIPT=(-s "$TMP/upload.lua")
fi

# ---------------------------------------------------------------- the proxies
forwarding_headers_nginx=""
forwarding_headers_haproxy=""
if [[ "$HEADERS" == 1 ]]; then
    forwarding_headers_nginx='
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id;'
    forwarding_headers_haproxy='
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt
    http-request set-header X-Request-Id %[unique-id]
    http-response set-header X-Request-Id %[unique-id]'
fi

mkdir -p "$TMP/rg" "$TMP/nginx" "$TMP/haproxy"
cat > "$TMP/rg/ringgate.toml" <<CONF
[server]
listen = ["127.0.0.1:$RG_PORT"]
workers = 1
cpus = [$PROXY_CPU]
driver = "$DRIVER"
$RINGGATE_EXTRA
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
$(backend_route "$UP_PORT")
CONF

{
nginx_prelude "$TMP/nginx" 9500
nginx_keepalive_upstream "$UP_PORT"
cat <<CONF
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        client_max_body_size 8m;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$forwarding_headers_nginx
        }
    }
}
CONF
} > "$TMP/nginx/nginx.conf"

cat > "$TMP/haproxy/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be$forwarding_headers_haproxy
    server up 127.0.0.1:$UP_PORT
CONF

declare -A PORT=([ringgate]=$RG_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
declare -A PID=()
for proxy in $PROXIES; do
    case $proxy in
        ringgate) (cd "$TMP/rg" && RUST_LOG=warn exec taskset -c "$PROXY_CPU" "$RINGGATE_BIN" run --config ringgate.toml) > "$TMP/rg/out" 2>&1 & ;;
        nginx) taskset -c "$PROXY_CPU" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" & ;;
        haproxy) taskset -c "$PROXY_CPU" haproxy -f "$TMP/haproxy/haproxy.cfg" -db > "$TMP/haproxy/out" 2>&1 & ;;
        *) die "unknown proxy $proxy (ringgate, nginx or haproxy)" ;;
    esac
    PID[$proxy]=$!
    PIDS+=($!)
done
for proxy in $PROXIES; do
    wait_relaying "$proxy" "http://127.0.0.1:${PORT[$proxy]}/"
done

wrk_run() {  # PROXY CONNECTIONS SECONDS OUT
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$2" -d"$3s" --latency "${WRK_SCRIPT[@]}" \
        "http://127.0.0.1:${PORT[$1]}$TARGET" > "$4"
}
p50_ms() {
    awk '$1 == "50%" { v = $2; n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
         print (u == "us" ? n / 1000 : u == "ms" ? n : n * 1000) }' "$1"
}

# measure PROXY C -> "rps p50 p99 cpu_us_per_req rss_kib new_origin_per_s errors"
measure() {
    local proxy=$1 c=$2 out="$TMP/wrk.out" t0 t1 a0 a1 rss reqs rps p99 errs non2xx
    wrk_run "$proxy" "$c" "$WARMUP" /dev/null
    t0=$(ticks "${PID[$proxy]}")
    a0=$(upstream_accepts)
    ( sleep $((DURATION / 2)); rss_kib "${PID[$proxy]}" > "$TMP/rss" ) &
    wrk_run "$proxy" "$c" "$DURATION" "$out"
    wait $!
    t1=$(ticks "${PID[$proxy]}")
    a1=$(upstream_accepts)
    read -r reqs rps p99 errs non2xx < <(wrk_parse "$out") || die "wrk output unreadable: $(cat "$out")"
    # A proxy answering errors is not being measured at its job: stop rather than report.
    ((non2xx == 0)) || die "$proxy answered $non2xx non-2xx responses; first one: $(curl -sk -i "http://127.0.0.1:${PORT[$proxy]}$TARGET" 2>&1 | head -1)"
    awk -v rps="$rps" -v p50="$(p50_ms "$out")" -v p99="$p99" -v ticks=$((t1 - t0)) \
        -v hz="$CLK_TCK" -v reqs="$reqs" -v rss="$(cat "$TMP/rss")" -v new=$((a1 - a0)) \
        -v d="$DURATION" -v err=$((errs + non2xx)) \
        'BEGIN { printf "%.0f %.3f %.3f %.2f %d %.0f %d\n", rps, p50, p99, ticks * 1e6 / hz / reqs, rss, new / d, err }'
}

# syscalls PROXY C -> syscalls per request over a 3 s run under strace -c -f
syscalls_per_request() {
    local proxy=$1 c=$2 p args=() calls reqs
    for p in $(procs "${PID[$proxy]}"); do args+=(-p "$p"); done
    strace -c -f -o "$TMP/strace" "${args[@]}" 2>/dev/null &
    local st=$!
    sleep 0.5
    wrk_run "$proxy" "$c" 3 "$TMP/wrk.st"
    kill -INT "$st"; wait "$st" 2>/dev/null || true
    # The total line: % time, seconds, usecs/call, calls, [errors,] "total".
    calls=$(awk '$NF == "total" { print $4 }' "$TMP/strace")
    reqs=$(wrk_parse "$TMP/wrk.st" | awk '{ print $1 }')
    awk -v c="${calls:-0}" -v r="$reqs" 'BEGIN { printf "%.2f\n", c / r }'
}

printf '%-5s %-5s %-9s %9s %8s %8s %9s %9s %9s %6s\n' conns round proxy "req/s" "p50 ms" "p99 ms" "cpu us/r" "rss KiB" "new up/s" errors
declare -A RESULT=()
for c in $SWEEP; do
    for round in $(seq "$ROUNDS"); do
        order=($PROXIES)
        shift_by=$(( (round - 1) % ${#order[@]} ))
        order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
        for proxy in "${order[@]}"; do
            m=$(measure "$proxy" "$c")
            RESULT[$c,$proxy]+="$m"$'\n'
            read -r rps p50 p99 cpu rss new err <<< "$m"
            printf '%-5s %-5s %-9s %9s %8s %8s %9s %9s %9s %6s\n' "$c" "$round" "$proxy" "$rps" "$p50" "$p99" "$cpu" "$rss" "$new" "$err"
        done
    done
done

col() { awk -v k="$1" 'NF { print $k }' | median; }
echo
echo "Medians of $ROUNDS rounds (${DURATION}s, $THREADS wrk thread(s), proxy on CPU $PROXY_CPU, driver $DRIVER, HEADERS=$HEADERS, BODY=${BODY:--}, UPLOAD=${UPLOAD:--})"
printf '%-5s %-9s %9s %8s %8s %9s %9s %9s %8s\n' conns proxy "req/s" "p50 ms" "p99 ms" "cpu us/r" "rss KiB" "new up/s" "sys/req"
declare -A MED=()
for c in $SWEEP; do
    for proxy in $PROXIES; do
        rows=${RESULT[$c,$proxy]}
        sys="-"
        [[ "$SYSCALLS" == 1 ]] && sys=$(syscalls_per_request "$proxy" "$c")
        for k in 1 2 3 4 5 6; do MED[$c,$proxy,$k]=$(col $k <<< "$rows"); done
        printf '%-5s %-9s %9s %8s %8s %9s %9s %9s %8s\n' "$c" "$proxy" "${MED[$c,$proxy,1]}" "${MED[$c,$proxy,2]}" \
            "${MED[$c,$proxy,3]}" "${MED[$c,$proxy,4]}" "${MED[$c,$proxy,5]}" "${MED[$c,$proxy,6]}" "$sys"
    done
done
if [[ " $PROXIES " == *" ringgate "* ]]; then
    echo
    echo "ringgate / peer (req/s, p99, cpu per request)"
    for c in $SWEEP; do
        for peer in $PROXIES; do
            [[ $peer == ringgate ]] && continue
            awk -v c="$c" -v peer="$peer" \
                -v r1="${MED[$c,ringgate,1]}" -v r2="${MED[$c,$peer,1]}" \
                -v p1="${MED[$c,ringgate,3]}" -v p2="${MED[$c,$peer,3]}" \
                -v u1="${MED[$c,ringgate,4]}" -v u2="${MED[$c,$peer,4]}" \
                'BEGIN { printf "%-5s vs %-8s req/s %.2f  p99 %.2f  cpu/request %.2f\n", c, peer, r1 / r2, p1 / p2, u1 / u2 }'
        done
    done
fi
if ((IDLE_CONNS > 0)); then
    echo
    echo "RSS per idle keep-alive connection ($IDLE_CONNS connections, one request each, then idle 10 s)"
    for proxy in $PROXIES; do
        printf '%-9s ' "$proxy"
        python3 "$HERE/idle_conns.py" "${PORT[$proxy]}" "${PID[$proxy]}" "$IDLE_CONNS"
    done
fi
