#!/usr/bin/env bash
# Builds the virtqueue fuzzer (tests/fuzz/fuzz-vring.c) with clang and
# libFuzzer + ASan + UBSan, compiling only the library sources it needs
# (no meson), then runs it over the committed seed corpus for a bounded
# time. Any crash, leak or sanitizer report fails the run (exit != 0).
#
# usage: tests/fuzz/run.sh [WORKDIR]
#   WORKDIR  where the binary, the scratch corpus and crash files go
#            (default: a new temporary directory)
#   FUZZ_TIME=seconds   run time (default 30)
# New inputs the fuzzer finds go to WORKDIR/corpus, never into the repo;
# add interesting ones to tests/fuzz/corpus/vring/ by hand.
# clang missing is an error, not a skip: scripts/deps.sh installs it.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/ferry-fuzz.XXXXXX)}
time=${FUZZ_TIME:-30}
cc=${CLANG:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "run.sh: FAIL: $cc not found; install it (scripts/deps.sh)" >&2
  exit 1
fi
mkdir -p "$work/corpus" "$work/artifacts"

"$cc" -g -O1 -std=gnu11 -D_GNU_SOURCE -DFERRY_BUILDING_LIBRARY \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Wno-missing-field-initializers -Werror \
  -I"$src/include" -I"$src/src/lib" \
  "$src/tests/fuzz/fuzz-vring.c" \
  "$src/src/lib/virtio/vring.c" "$src/src/lib/virtio/gpa.c" \
  "$src/src/lib/stream/vmstate.c" "$src/src/lib/util/log.c" "$src/src/lib/util/error.c" \
  -o "$work/fuzz-vring"

echo "run.sh: fuzzing for ${time}s in $work" >&2
set +e
"$work/fuzz-vring" -max_total_time="$time" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
  "$work/corpus" "$src/tests/fuzz/corpus/vring" 2>&1 | tee "$work/fuzz.log" | tail -20
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "run.sh: FAIL: fuzzer exited $rc; crash inputs in $work/artifacts" >&2
  exit 1
fi
grep -E "^Done [0-9]+ runs" "$work/fuzz.log" >&2 || true
