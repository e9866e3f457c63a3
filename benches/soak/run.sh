#!/usr/bin/env bash
# Soak: tests/soak.rs run long and hard. A real `ringgate run` process (2 workers) under
# steady load over plain, signed, rate-limited and breaker-guarded routes, a reload every
# 10 s, the upstream restarted once halfway. Prints: requests ok, errors (those during
# the upstream restart are expected), RSS and fd counts with their slopes after the first
# fifth (warm-up), and the p99 of every 10 s interval. Results: RESULTS.md.
#
# The load is examples/loadgen (open loop, requests signed on the fly) at LOAD (a share)
# of the capacity it measures first on the same setup (closed loop, 64 connections); or,
# with RATE set, the test's own paced clients at RATE requests a second.
#
#   benches/soak/run.sh                        # DURATION=600 LOAD=0.8
#   DURATION=60 RATE=1500 benches/soak/run.sh  # what CI runs (CI=1 cargo nextest run)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -n ${RATE:-} ]]; then
    export RINGGATE_SOAK_RATE=$RATE
else
    cargo build --release --quiet --example loadgen
    export RINGGATE_SOAK_LOADGEN=$PWD/target/release/examples/loadgen
    export RINGGATE_SOAK_LOAD=${LOAD:-0.8}
fi
RINGGATE_SOAK_SECONDS=${DURATION:-600} \
    cargo test --release --test soak -- --nocapture 2>&1 | grep -E "^soak:|test result|panicked"
