#!/usr/bin/env bash
# Runs Ferry's benchmarks; each prints one JSON object.
set -eu
cd "$(dirname "$0")/.."
./build/bench/bench-zero
./build/bench/bench-sum  # what the page checksums cost per GiB, beside a copy (issue 20)
./build/bench/bench-dirty
./build/bench/bench-placement
./build/bench/bench-bandwidth  # max-bandwidth: peak 100 ms window / cap, main and multifd
python3 bench/precopy.py "$@"
python3 bench/vs-qemu/run.py  # Ferry and QEMU side by side (installs qemu-system-x86 if absent)
python3 bench/postcopy.py
python3 bench/hints.py
python3 bench/autoconverge.py
python3 bench/devices.py
bench/flip.sh 200  # integrity: random bit flips, zero silent corruptions
