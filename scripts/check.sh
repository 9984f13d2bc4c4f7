#!/usr/bin/env bash
# Runs the Ferry tests in two builds: every test in an AddressSanitizer +
# UndefinedBehaviorSanitizer build (build-asan/) except the fuzz suite; in
# the normal build (build/) every test except suite 'slow' (the longest
# integration tests, a minute or two each: migrate, postcopy, devices, cli,
# qmp), which run sanitized only, to keep the whole run well under 20
# minutes. The fuzz suite runs once, in the normal build (each fuzzer is its
# own clang build with ASan and UBSan, whichever meson build runs it).
# Ends with one line "N passed, N failed" (N counts test cases of both builds).
# WERROR=true makes compiler warnings fatal (CI sets it).
set -u
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
WERROR=${WERROR:-false}

pass=0
fail=0
run_build() {
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" -Dwerror="$WERROR" "$@" >/dev/null || return 1
	else
		meson configure "$dir" -Dwerror="$WERROR" >/dev/null || return 1
	fi
	ninja -C "$dir" || return 1
	# ASan needs no leak check noise from sanitizers of forked helpers; UBSan must abort.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
		meson test -C "$dir" --print-errorlogs --num-processes 1 $TEST_ARGS
	return 0
}

count() {
	local log=$1/meson-logs/testlog.json
	[ -f "$log" ] || return
	local p f
	p=$(python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    r=json.loads(l); n+= r["result"] in ("OK","EXPECTEDFAIL","SKIP")
print(n)' "$log")
	f=$(python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    r=json.loads(l); n+= r["result"] not in ("OK","EXPECTEDFAIL","SKIP")
print(n)' "$log")
	pass=$((pass + p))
	fail=$((fail + f))
}

for spec in "build" "build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Doptimization=1"; do
	set -- $spec
	dir=$1; shift
	TEST_ARGS="--no-suite slow"
	[ "$dir" = build-asan ] && TEST_ARGS="--no-suite fuzz"
	rm -f "$dir/meson-logs/testlog.json"
	if ! run_build "$dir" "$@"; then
		echo "check: build $dir failed" >&2
		fail=$((fail + 1))
		continue
	fi
	count "$dir"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
