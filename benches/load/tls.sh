#!/usr/bin/env bash
# Load bench "tls": HTTPS termination, ringgate against nginx configured the same way.
#
# Question: with the same ECDSA P-256 certificate and TLS 1.3 only, one pinned worker
# each, how do ringgate's keep-alive HTTPS req/s and CPU per request compare with
# nginx's, and how many handshakes a second (a new connection per request) does each
# complete? Two handshake modes: `resumed` (wrk resumes its TLS session on every new
# connection: PSK with ECDHE, no certificate signature) and `full` (resumption off on
# both: ringgate `session_resumption = false`, nginx `ssl_session_tickets off`, served
# by a second instance of each on its own port).
#
# - nginx: `listen ... ssl`, `ssl_protocols TLSv1.3`, the certificate, `proxy_pass` to an
#   `upstream` with `keepalive 4096`, `proxy_http_version 1.1`, `Connection ""`; nothing
#   else (no session cache: wrk does not resume sessions, so it would not be used).
# - ringgate: `[tls] min_version = "1.3"` with the same certificate, its default config
#   otherwise (one route, one upstream).
# Layout as in peers.sh: the proxy alone on PROXY_CPU; wrk and the upstream nginx on
# LOAD_CPU; rounds alternate the order; medians.
#
#   benches/load/tls.sh                  # ~3 min
# Then RSS per idle HTTPS keep-alive connection (IDLE_CONNS of them, idle_conns.py).
#   ROUNDS=5 CONNS=256 benches/load/tls.sh
#
# Knobs: ROUNDS=3 DURATION=6 WARMUP=2 CONNS=64 PROXY_CPU=1 LOAD_CPU=0 DRIVER=io_uring
#   IDLE_CONNS=5000 (0: skip)
#   RINGGATE_BIN= (default: cargo build --release) UP_PORT=28781 RG_PORT=28780
#   ADMIN_PORT=28782 NGINX_PORT=28790 (the full-handshake instances: each port + 100)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DRIVER=${DRIVER:-io_uring}
IDLE_CONNS=${IDLE_CONNS:-5000}
UP_PORT=${UP_PORT:-28781}
RG_PORT=${RG_PORT:-28780}
ADMIN_PORT=${ADMIN_PORT:-28782}
NGINX_PORT=${NGINX_PORT:-28790}
PROXY_CPU_QUOTA=""
PROXY_CPU_QUOTA_PERIOD_US=5000

die() { echo "tls.sh: $*" >&2; exit 1; }
for tool in wrk nginx taskset curl openssl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx curl openssl)"
done
ulimit -n "$(ulimit -Hn)"
# shellcheck source=common.sh
source "$HERE/common.sh"
bench_start tls
CLK_TCK=$(getconf CLK_TCK)

# One ECDSA P-256 certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=bench.local" -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
    -keyout "$TMP/bench.key" -out "$TMP/bench.pem" 2>/dev/null

start_upstream_nginx "$TMP/up" "$UP_PORT" "$LOAD_CPU"

mkdir -p "$TMP/rg" "$TMP/nginx"
# ringgate_config TLS_PORT ADMIN_PORT RESUMPTION
ringgate_config() {
    cat <<CONF
[server]
listen = ["127.0.0.1:$(($1 + 5))"]
workers = 1
cpus = [$PROXY_CPU]
driver = "$DRIVER"
[admin]
listen = "127.0.0.1:$2"
[tls]
listen = ["127.0.0.1:$1"]
min_version = "1.3"
session_resumption = $3
[[tls.certs]]
cert = "$TMP/bench.pem"
key = "$TMP/bench.key"
names = ["bench.local", "127.0.0.1"]
$(backend_route "$UP_PORT")
CONF
}
mkdir -p "$TMP/rg-full"
ringgate_config "$RG_PORT" "$ADMIN_PORT" true > "$TMP/rg/ringgate.toml"
ringgate_config $((RG_PORT + 100)) $((ADMIN_PORT + 100)) false > "$TMP/rg-full/ringgate.toml"
# nginx_config DIR PORT EXTRA: nginx terminating TLS on PORT, EXTRA added to its server.
nginx_config() {
    nginx_prelude "$1" 9500
    nginx_keepalive_upstream "$UP_PORT"
    cat <<CONF
    server {
        listen 127.0.0.1:$2 ssl backlog=4096;
        ssl_certificate $TMP/bench.pem;
        ssl_certificate_key $TMP/bench.key;
        ssl_protocols TLSv1.3;
        $3
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}
mkdir -p "$TMP/nginx-full"
nginx_config "$TMP/nginx" "$NGINX_PORT" "" > "$TMP/nginx/nginx.conf"
nginx_config "$TMP/nginx-full" $((NGINX_PORT + 100)) "ssl_session_tickets off;" > "$TMP/nginx-full/nginx.conf"

# Instances: "ringgate" and "nginx" resume sessions; "ringgate-full" and "nginx-full" do not.
declare -A PORT=([ringgate]=$RG_PORT [nginx]=$NGINX_PORT
    [ringgate-full]=$((RG_PORT + 100)) [nginx-full]=$((NGINX_PORT + 100)))
declare -A PID=()
for rg in rg rg-full; do
    (cd "$TMP/$rg" && RUST_LOG=warn exec taskset -c "$PROXY_CPU" "$RINGGATE_BIN" run --config ringgate.toml) > "$TMP/$rg/out" 2>&1 &
    PID[${rg/rg/ringgate}]=$!
    PIDS+=($!)
done
for ng in nginx nginx-full; do
    taskset -c "$PROXY_CPU" nginx -p "$TMP/$ng/" -e "$TMP/$ng/error.log" -c "$TMP/$ng/nginx.conf" &
    PID[$ng]=$!
    PIDS+=($!)
done
for proxy in "${!PORT[@]}"; do
    wait_relaying "$proxy" "https://127.0.0.1:${PORT[$proxy]}/"
done

# measure PROXY MODE -> "rps p99 cpu_us_per_req errors"; MODE keepalive, resumed or
# full (served by the PROXY-full instance)
measure() {
    local proxy=$1 mode=$2 out="$TMP/wrk.out" t0 t1 reqs rps p99 errs non2xx args=()
    [[ $mode != keepalive ]] && args=(-H "Connection: close")
    [[ $mode == full ]] && proxy=$proxy-full
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${args[@]}" "https://127.0.0.1:${PORT[$proxy]}/" > /dev/null
    t0=$(ticks "${PID[$proxy]}")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${args[@]}" \
        "https://127.0.0.1:${PORT[$proxy]}/" > "$out"
    t1=$(ticks "${PID[$proxy]}")
    read -r reqs rps p99 errs non2xx < <(wrk_parse "$out") || die "wrk output unreadable: $(cat "$out")"
    # A proxy answering errors is not being measured at its job: stop rather than report.
    ((non2xx == 0)) || die "$proxy answered $non2xx non-2xx responses; first one: $(curl -sk -i "https://127.0.0.1:${PORT[$proxy]}/" 2>&1 | head -1)"
    awk -v rps="$rps" -v p99="$p99" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v reqs="$reqs" \
        -v err=$((errs + non2xx)) \
        'BEGIN { printf "%.0f %.3f %.2f %d\n", rps, p99, ticks * 1e6 / hz / reqs, err }'
}

printf '%-9s %-5s %-9s %9s %8s %9s %6s\n' mode round proxy "req/s" "p99 ms" "cpu us/r" errors
declare -A RESULT=()
for mode in keepalive resumed full; do
    for round in $(seq "$ROUNDS"); do
        order=(ringgate nginx)
        (( round % 2 == 0 )) && order=(nginx ringgate)
        for proxy in "${order[@]}"; do
            m=$(measure "$proxy" "$mode")
            RESULT[$mode,$proxy]+="$m"$'\n'
            read -r rps p99 cpu err <<< "$m"
            printf '%-9s %-5s %-9s %9s %8s %9s %6s\n' "$mode" "$round" "$proxy" "$rps" "$p99" "$cpu" "$err"
        done
    done
done

col() { awk -v k="$1" 'NF { print $k }' | median; }
echo
echo "Medians of $ROUNDS rounds (${DURATION}s, $CONNS connections, TLS 1.3, ECDSA P-256, proxy on CPU $PROXY_CPU, driver $DRIVER)"
printf '%-9s %-9s %9s %8s %9s\n' mode proxy "req/s" "p99 ms" "cpu us/r"
declare -A MED=()
for mode in keepalive resumed full; do
    for proxy in ringgate nginx; do
        for k in 1 2 3; do MED[$mode,$proxy,$k]=$(col $k <<< "${RESULT[$mode,$proxy]}"); done
        printf '%-9s %-9s %9s %8s %9s\n' "$mode" "$proxy" "${MED[$mode,$proxy,1]}" "${MED[$mode,$proxy,2]}" "${MED[$mode,$proxy,3]}"
    done
done
echo
for mode in keepalive resumed full; do
    awk -v m="$mode" -v r1="${MED[$mode,ringgate,1]}" -v r2="${MED[$mode,nginx,1]}" \
        -v p1="${MED[$mode,ringgate,2]}" -v p2="${MED[$mode,nginx,2]}" \
        -v u1="${MED[$mode,ringgate,3]}" -v u2="${MED[$mode,nginx,3]}" \
        'BEGIN { printf "%-9s ringgate / nginx: req/s %.2f  p99 %.2f  cpu/request %.2f\n", m, r1 / r2, p1 / p2, u1 / u2 }'
done
if ((IDLE_CONNS > 0)); then
    echo
    echo "RSS per idle HTTPS keep-alive connection ($IDLE_CONNS connections, one request each, then idle 10 s)"
    for proxy in ringgate nginx; do
        printf '%-9s ' "$proxy"
        python3 "$HERE/idle_conns.py" "${PORT[$proxy]}" "${PID[$proxy]}" "$IDLE_CONNS" tls
    done
fi
