#!/usr/bin/env bash
# Builds one libFuzzer target (tests/fuzz/fuzz-TARGET.c) with clang and
# libFuzzer + ASan + UBSan, compiling only the sources it needs (no meson),
# then runs it over its committed seed corpus (tests/fuzz/corpus/TARGET/)
# for a bounded time. Any crash, leak or sanitizer report fails the run
# (exit != 0).
#
# usage: tests/fuzz/run.sh TARGET [WORKDIR]
#   TARGET   vring (the split virtqueue), devstate (the live device
#            records and the multifd device-state packet), gdev (the
#            synthetic guest's device frame parser), qmp (the QMP server:
#            framing, envelope, argument checks, dispatch), vmsd (the
#            device-state decoder behind a SECTION_FULL), rp (the return
#            path's messages), hs (the stream header and the channels'
#            handshakes), stream (the destination's loader: every record
#            of the main connection, through the public API), pcstream
#            (the same with postcopy allowed on the destination: ADVISE,
#            DISCARD, LISTEN, PACKAGE, RUN, the background stream),
#            pcconn (postcopy's preempt connection and a recovery's
#            connections, after their openings), src (a real source
#            driven by a hostile destination's return path),
#            multifd (the destination's multifd channel: packets, pages,
#            zstd, device state, SYNC)
#   WORKDIR  where the binary, the scratch corpus and crash files go
#            (default: a new temporary directory)
#   FUZZ_TIME=seconds   run time (default 30)
# New inputs the fuzzer finds go to WORKDIR/corpus, never into the repo;
# add interesting ones to tests/fuzz/corpus/TARGET/ by hand.
# clang missing is an error, not a skip: scripts/deps.sh installs it.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: run.sh TARGET [WORKDIR]}
work=${2:-$(mktemp -d /tmp/ferry-fuzz.XXXXXX)}
time=${FUZZ_TIME:-30}
cc=${CLANG:-clang}

lib=$src/src/lib
ldflags=()
# A ferry_chan and the wire codec: its checksums (libxxhash) and TLS (GnuTLS).
chan_srcs=("$lib/stream/wire.c" "$lib/stream/sum.c" "$lib/stream/chan.c"
           "$lib/stream/ratelimit.c" "$lib/transport/socket.c" "$lib/transport/tls.c"
           "$lib/util/bitmap.c" "$lib/util/log.c" "$lib/util/error.c")
chan_libs=(-lxxhash -lgnutls)
case $target in
  vring)
    srcs=("$lib/virtio/vring.c" "$lib/virtio/gpa.c" "$lib/stream/vmstate.c"
          "$lib/util/log.c" "$lib/util/error.c") ;;
  devstate)
    srcs=("${chan_srcs[@]}")
    ldflags=("${chan_libs[@]}") ;;
  gdev)
    srcs=("$src/src/guest/guest.c" "$src/src/guest/devices.c")
    ldflags=(-Wl,--wrap=mmap) ;; # guard pages around the device memory
  vmsd|rp|hs)
    srcs=("${chan_srcs[@]}")
    ldflags=("${chan_libs[@]}")
    case $target in
      vmsd) srcs+=("$lib/stream/vmstate.c") ;;
      rp) srcs+=("$lib/migration/postcopy.c") ;;
    esac ;;
  stream|pcstream|pcconn|multifd|src)
    # The whole library: the real destination (or source), driven through its API.
    mapfile -t srcs < <(find "$lib" -name '*.c' | sort)
    ldflags=("${chan_libs[@]}" -lzstd) ;;
  qmp)
    d=$src/src/daemon
    srcs=("$d/qmp.c" "$d/qmp-schema.c" "$d/qmp-fds.c" "$d/loop.c" "$d/host-schema.c"
          "$lib/transport/socket.c" "$lib/util/log.c" "$lib/util/error.c")
    ldflags=(-ljansson) ;;
  *)
    echo "run.sh: unknown target '$target' (vring, devstate, gdev, qmp, vmsd, rp, hs, stream, pcstream, pcconn, multifd, src)" >&2
    exit 2 ;;
esac

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "run.sh: FAIL: $cc not found; install it (scripts/deps.sh)" >&2
  exit 1
fi
mkdir -p "$work/corpus" "$work/artifacts"

"$cc" -g -O1 -std=gnu11 -D_GNU_SOURCE -DFERRY_BUILDING_LIBRARY \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Wno-missing-field-initializers -Werror \
  -I"$src/include" -I"$lib" -I"$src/src/guest" -I"$src/src/daemon" \
  "$src/tests/fuzz/fuzz-$target.c" "${srcs[@]}" "${ldflags[@]}" -lpthread \
  -o "$work/fuzz-$target"

echo "run.sh: fuzzing $target for ${time}s in $work" >&2
set +e
"$work/fuzz-$target" -max_total_time="$time" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
  "$work/corpus" "$src/tests/fuzz/corpus/$target" 2>&1 | tee "$work/fuzz.log" | tail -20
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "run.sh: FAIL: fuzzer exited $rc; crash inputs in $work/artifacts" >&2
  exit 1
fi
grep -E "^Done [0-9]+ runs" "$work/fuzz.log" >&2 || true
