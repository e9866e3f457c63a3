#!/usr/bin/env bash
# Soak: tests/soak.rs run long and hard. A real `ringgate run` process (2 workers) under
# steady paced load over plain, signed, rate-limited and breaker-guarded routes, a reload
# every 10 s, the upstream restarted once halfway. Prints: requests ok, errors (those
# during the upstream restart are expected), RSS and fd counts with their slopes after
# the first fifth (warm-up), and the p99 of every 10 s interval. Results: RESULTS.md.
#
#   benches/soak/run.sh                        # DURATION=600 RATE=8000
#   DURATION=60 RATE=1500 benches/soak/run.sh  # what CI runs (CI=1 cargo nextest run)
set -euo pipefail
cd "$(dirname "$0")/../.."
RINGGATE_SOAK_SECONDS=${DURATION:-600} RINGGATE_SOAK_RATE=${RATE:-8000} \
    cargo test --release --test soak -- --nocapture 2>&1 | grep -E "^soak:|test result|panicked"
