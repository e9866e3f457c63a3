#!/usr/bin/env bash
# Load bench, "upgrade" scenario. Question: does an in-place upgrade (SIGUSR2) under
# full load fail or refuse anything, and what does it cost in requests per second and
# p99 over the seconds around it?
#
# Each round runs the same gateway (one worker, pinned) for DURATION under two wrk
# loads at once: CONNECTIONS keep-alive connections, and NEW_CONNECTIONS connections
# that each send one request and close (`Connection: close`). Rounds alternate between
# "steady" (no upgrade) and "upgraded" (SIGUSR2 to the serving process at 1/3 and 2/3
# of DURATION: two upgrades in a row, the second from the first's successor). Reports
# per round and the medians: requests, req/s, p99, socket errors and non-2xx answers of
# both loads, and the upgraded/steady ratios.
#
#   ROUNDS=3 DURATION=9 CONNECTIONS=64 NEW_CONNECTIONS=4 DRIVER=auto benches/load/upgrade.sh
#   PROXY_CPU=1 LOAD_CPU=0 RINGGATE_BIN=path KEEP_TMP=1
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-9}
CONNECTIONS=${CONNECTIONS:-64}
NEW_CONNECTIONS=${NEW_CONNECTIONS:-4}
DRIVER=${DRIVER:-auto}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
RINGGATE_PORT=${RINGGATE_PORT:-18080}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
die() { echo "upgrade.sh: $*" >&2; exit 1; }
for tool in wrk taskset nginx curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx curl)"
done
# shellcheck source=common.sh
. "$HERE/common.sh"
bench_start upgrade

start_upstream_nginx "$TMP/up" "$UPSTREAM_PORT" "$LOAD_CPU"
mkdir -p "$TMP/rg"
# The gateway runs from a copy, as an installed binary would.
cp "$RINGGATE_BIN" "$TMP/rg/ringgate"
{
    cat <<CONF
[server]
listen = ["127.0.0.1:$RINGGATE_PORT"]
workers = 1
cpus = [$PROXY_CPU]
driver = "$DRIVER"
drain_timeout = "5s"
[admin]
listen = ""
CONF
    backend_route "$UPSTREAM_PORT"
} > "$TMP/rg/ringgate.toml"

# One round: MODE steady|upgraded -> "ka_reqs ka_rps ka_p99 ka_err ka_non2xx new_reqs
# new_rps new_p99 new_err new_non2xx upgrades"
round() {
    local mode=$1 log="$TMP/rg/$mode.log" pid
    (cd "$TMP/rg" && RUST_LOG=info exec ./ringgate run --config ringgate.toml) > "$log" 2>&1 &
    pid=$!
    wait_relaying ringgate "http://127.0.0.1:$RINGGATE_PORT/"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$RINGGATE_PORT/" > "$TMP/ka.out" 2>&1 &
    local ka=$!
    taskset -c "$LOAD_CPU" wrk -t1 -c"$NEW_CONNECTIONS" -d"${DURATION}s" --latency \
        -H "Connection: close" "http://127.0.0.1:$RINGGATE_PORT/" > "$TMP/new.out" 2>&1 &
    local new=$!
    local upgrades=0
    if [[ $mode == upgraded ]]; then
        for nth in 1 2; do
            sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 3 }')"
            cp "$RINGGATE_BIN" "$TMP/rg/ringgate.new" && mv "$TMP/rg/ringgate.new" "$TMP/rg/ringgate"
            kill -USR2 "$pid"
            for _ in $(seq 200); do
                [[ $(grep -c "upgrade: process .* serves" "$log") -ge $nth ]] && break
                sleep 0.05
            done
            pid=$(grep -o "upgrade: process [0-9]*" "$log" | sed -n "${nth}p" | awk '{ print $3 }' || true)
            [[ -n "$pid" ]] || die "upgrade $nth did not happen (see $log)"
            upgrades=$nth
            # One upgrade at a time: the next waits until this one's old process stopped.
            for _ in $(seq 200); do
                [[ $(grep -c "upgrade: the old process has stopped" "$log") -ge $nth ]] && break
                sleep 0.05
            done
        done
    fi
    wait "$ka" "$new"
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    echo "$(wrk_parse "$TMP/ka.out") $(wrk_parse "$TMP/new.out") $upgrades"
}

printf '%-9s %10s %9s %7s %5s %6s %9s %8s %7s %5s %6s %3s\n' mode ka_reqs ka_rps ka_p99 err non2xx \
    new_reqs new_rps new_p99 err non2xx upg
: > "$TMP/steady" ; : > "$TMP/upgraded"
for r in $(seq "$ROUNDS"); do
    for mode in steady upgraded; do
        line=$(round "$mode")
        echo "$line" >> "$TMP/$mode"
        # shellcheck disable=SC2086
        printf '%-9s %10s %9s %7s %5s %6s %9s %8s %7s %5s %6s %3s\n' "$mode" $line
    done
done
col() { awk -v c="$2" '{ print $c }' "$TMP/$1" | median; }
echo "medians over $ROUNDS rounds (driver $DRIVER, ${DURATION}s, $CONNECTIONS keep-alive + $NEW_CONNECTIONS new-connection clients):"
for mode in steady upgraded; do
    printf '  %-9s keep-alive %s req/s p99 %s ms | new connections %s req/s p99 %s ms | errors %s + %s, non-2xx %s + %s\n' \
        "$mode" "$(col "$mode" 2)" "$(col "$mode" 3)" "$(col "$mode" 7)" "$(col "$mode" 8)" \
        "$(col "$mode" 4)" "$(col "$mode" 9)" "$(col "$mode" 5)" "$(col "$mode" 10)"
done
awk -v a="$(col upgraded 2)" -v b="$(col steady 2)" -v c="$(col upgraded 3)" -v d="$(col steady 3)" \
    'BEGIN { printf "  upgraded/steady: keep-alive req/s %.3f, p99 %.2f\n", a / b, c / d }'
echo "  errors and non-2xx summed over every upgraded round: $(awk '{ e += $4 + $9; n += $5 + $10 } END { print e + 0, n + 0 }' "$TMP/upgraded")"
