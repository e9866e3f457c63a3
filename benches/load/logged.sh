#!/usr/bin/env bash
# Load bench, "logged" scenario: what observing costs under load. Question: with metrics
# on and one JSON access-log line per request written to a file, does the gateway keep
# its throughput within 5% of the same gateway with both off (`[admin] metrics = false`,
# no access log)?
#
# Runs limits.sh (same gateways, rounds, knobs and report) with `[access_log]` on the
# "logged" gateway, writing to a file in its temporary directory:
#   benches/load/logged.sh                       # ROUNDS=5 DURATION=10s WARMUP=2s
#   PROXY_CPU_QUOTA=50 benches/load/logged.sh    # req/s with the proxy the bottleneck
set -euo pipefail
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringgate-logged.XXXXXX")
trap 'rm -rf "$LOG_DIR"' EXIT
export SCENARIO=logged EXPECT_RATELIMIT=0 PLAIN_ADMIN_EXTRA="metrics = false"
export ROUTE_EXTRA="[access_log]
path = \"$LOG_DIR/access.log\""
"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/limits.sh" "$@"
