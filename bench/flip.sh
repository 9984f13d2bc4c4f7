#!/usr/bin/env bash
# Issue 18's guarantee, measured: RUNS (default 200) migrations of a running
# guest through the fault-injecting proxy, each with one random bit flipped
# at a random offset of one random connection (precopy main; multifd main or
# channel; postcopy main or preempt). Every run must fail with the source
# running, or complete (after a postcopy recovery if it paused) bit-exact
# against the guest's twin. Prints one line per run, then one JSON object
# with the counts; exits non-zero on any silent corruption.
#   bench/flip.sh [RUNS] [SEED]
set -eu
cd "$(dirname "$0")/.."
FLIP_RUNS=${1:-200} FLIP_SEED=${2:-1} ./build/tests/flip-random 2>/dev/null |
  grep -E '^(run |\{)'
