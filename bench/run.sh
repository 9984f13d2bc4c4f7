#!/usr/bin/env bash
# Runs Ferry's benchmarks; each prints one JSON object.
set -eu
cd "$(dirname "$0")/.."
./build/bench/bench-zero
./build/bench/bench-dirty
./build/bench/bench-placement
python3 bench/precopy.py "$@"
