#!/usr/bin/env bash
# CLI integration tests: `ferry` processes migrating over real sockets.
# Usage: cli.sh PATH/TO/ferry
set -u
FERRY=${1:?usage: cli.sh PATH/TO/ferry}
TMP=$(mktemp -d /tmp/ferry-cli.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
# json FILE EXPR: evaluates a Python expression on the last JSON line of FILE (as `j`).
json() { python3 -c 'import json,sys
j=json.loads([l for l in open(sys.argv[1]) if l.strip()][-1])
print(eval(sys.argv[2]))' "$1" "$2"; }
expect_eq() { # name got want
	if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi
}

SPEC=mem=256M,vram=4M,vcpus=2,workload=random,rate=100M

# 1. The demo: a live migration between two processes, verified bit-exact.
"$FERRY" demo --mem 256M --json >"$TMP/demo.json" 2>"$TMP/demo.err"
rc=$?
expect_eq "demo exit code" "$rc" 0
expect_eq "demo status" "$(json "$TMP/demo.json" 'j["status"]')" completed
expect_eq "demo verified" "$(json "$TMP/demo.json" 'j["verified"]')" True
expect_eq "demo counted pages" "$(json "$TMP/demo.json" 'j["normal_pages"] > 60000')" True

# 2. Destination killed mid-stream: the source fails cleanly, its guest keeps
#    running and still matches its twin.
"$FERRY" host --guest "$SPEC" --incoming "unix:$TMP/d.sock" --json >"$TMP/dst.json" 2>/dev/null &
dpid=$!
for _ in $(seq 100); do [ -S "$TMP/d.sock" ] && break; sleep 0.05; done
"$FERRY" host --guest "$SPEC" --migrate "unix:$TMP/d.sock" --set max-bandwidth=40M \
	--verify --json >"$TMP/src.json" 2>"$TMP/src.err" &
spid=$!
sleep 1.5
kill -9 $dpid
wait $spid
rc=$?
expect_eq "source exit code after destination died" "$rc" 1
expect_eq "source status" "$(json "$TMP/src.json" 'j["migration"]["status"]')" failed
expect_eq "source guest still running" "$(json "$TMP/src.json" 'j["guest-running"]')" True
expect_eq "source guest matches twin" "$(json "$TMP/src.json" 'j["verify"]["matches"]')" True
expect_eq "source error names the peer" \
	"$(json "$TMP/src.json" '"Connection reset by peer" in j["migration"]["error-desc"] or "Broken pipe" in j["migration"]["error-desc"]')" True

# 3. Hostile input to a destination process: garbage and a truncated stream.
feed() { # bytes(hex) -> destination JSON in $TMP/f.json
	rm -f "$TMP/f.sock"
	"$FERRY" host --guest mem=16M,vcpus=1 --incoming "unix:$TMP/f.sock" --json >"$TMP/f.json" 2>/dev/null &
	local p=$!
	for _ in $(seq 100); do [ -S "$TMP/f.sock" ] && break; sleep 0.05; done
	python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(bytes.fromhex(sys.argv[2])); s.shutdown(socket.SHUT_WR)
s.recv(4096)' "$TMP/f.sock" "$1"
	wait $p
	echo $?
}
rc=$(feed 4741524241474521000000000000000000000000000000000000000000)
expect_eq "garbage stream exit code" "$rc" 1
expect_eq "garbage stream error" "$(json "$TMP/f.json" 'j["migration"]["error-desc"]')" \
	"not a Ferry migration stream (magic 0x47415242) (stream header at offset 0)"
rc=$(feed 46525259000000010000000000000000000000000000000000001000)
expect_eq "truncated stream exit code" "$rc" 1
expect_eq "truncated stream error" "$(json "$TMP/f.json" 'j["migration"]["error-desc"]')" \
	"truncated stream: end of data with 1 bytes missing (record at offset 28)"

# 4. Usage errors are exact and exit 2.
out=$("$FERRY" host --guest workload=foo 2>&1); rc=$?
expect_eq "bad workload exit" "$rc" 2
expect_eq "bad workload message" "$out" \
	"ferry host: --guest: unknown workload 'foo' (expected idle, stride, random, hotset)"
out=$("$FERRY" host --set foo=1 2>&1); rc=$?
expect_eq "bad parameter exit" "$rc" 2
expect_eq "bad parameter message" "$out" \
	"ferry host: unknown parameter 'foo' (expected downtime-limit, max-bandwidth, x-max-passes)"
out=$("$FERRY" host --set downtime-limit=abc 2>&1); rc=$?
expect_eq "bad value message" "$out" "ferry host: parameter 'downtime-limit': invalid value 'abc'"
out=$("$FERRY" frob 2>&1 | head -1); expect_eq "unknown command" "$out" "ferry: unknown command 'frob'"
out=$("$FERRY" host --guest mem=16M --migrate ftp:x 2>&1); rc=$?
expect_eq "bad uri exit" "$rc" 2
expect_eq "bad uri message" "$out" \
	"ferry host: unsupported migration URI 'ftp:x' (expected tcp:HOST:PORT or unix:PATH)"

echo "cli: $failures failure(s)"
[ "$failures" -eq 0 ]
