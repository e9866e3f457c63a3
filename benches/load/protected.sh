#!/usr/bin/env bash
# Load bench, "protected" scenario: what a breaker and an isolation group cost under load.
# Question: on a healthy upstream (so the breaker stays closed and the group never fills),
# does a protected route keep its throughput within 5% of plain proxying, and what do the
# shared counters add to p99 and to CPU per request?
#
# Runs limits.sh (same gateways, rounds, knobs and report) with the route lines below in
# place of its limits:
#   benches/load/protected.sh                       # ROUNDS=5 DURATION=10s WARMUP=2s
#   PROXY_CPU_QUOTA=50 benches/load/protected.sh    # req/s with the proxy the bottleneck
set -euo pipefail
export SCENARIO=protected EXPECT_RATELIMIT=0
export ROUTE_EXTRA='breaker = { consecutive_failures = 5, error_rate = 0.5, window = "10s" }
isolation = "bench"
[[isolation]]
name = "bench"
max_in_flight = 100000'
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/limits.sh" "$@"
