#!/usr/bin/env python3
"""QMP conformance: Ferry against Debian's QEMU 7.2, the same sequence on both.

Usage: test-conformance.py PATH/TO/ferry [PATH/TO/qemu-system-x86_64]

Each engine gets a source (stopped, as QEMU's -S) and a destination
(-incoming defer), and goes through one sequence: the greeting, every query
Ferry implements, the same bad arguments, run state, capabilities and
parameters, a migration between its two processes, and the commands that
need a migration. Every reply is compared member by member (the members
and their JSON types, recursively; error replies exactly), and the two
schemas' arguments for every command Ferry implements. Every difference
must be in INTENDED below, with its reason, and every entry there must
still occur: the list is exact. Prints "ok:"/"FAIL:" lines, exits 1 on a
failure, 77 (skipped) when QEMU is not installed.
"""
import json, os, select, shutil, socket, subprocess, sys, tempfile, time

FERRY = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/ferry"
QEMU = sys.argv[2] if len(sys.argv) > 2 else shutil.which("qemu-system-x86_64")
TIMEOUT = 60.0

# (what, path) -> why. "what" is the step's name; path the member's ("return.ram.x-skipped").
# "+" marks a member only Ferry has, "-" one only QEMU has, "!" a different value or type.
INTENDED = {
    ("query-cpus-fast", "-return[].props"): "no socket/core/thread topology: QEMU's props is optional",
    ("query-pci", "-return[]"): "the synthetic guest has no PCI bus: an empty list",
    ("query-machines", "-return[].alias"): "one machine, Ferry's own, without an alias",
    ("query-machines", "-return[].default-cpu-type"): "no CPU models: the vCPUs are host threads",
    ("migrate-set-parameters negative", "+error"):
        "Ferry refuses a negative size with QEMU's visitor message; QEMU 7.2 accepts -1 for max-bandwidth",
    ("migrate-set-parameters negative", "-return"): "as above",
    ("migrate-set-parameters range", "!error.desc"):
        "Ferry's limit is 16 channels (QEMU's 255), and its message names the QMP parameter "
        "(QEMU 7.2's says 'multifd_channels')",
    ("migrate-set-parameters x-max-passes", "+return"): "a Ferry parameter (x-) QEMU lacks",
    ("migrate-set-parameters x-max-passes", "-error"): "as above",
    ("migrate ftp", "!error.desc"): "Ferry's message names what it accepts",
    ("migrate {}", "!error.desc"): "QEMU 8.2's message: Ferry has 8.2's channels, so uri is optional",
    ("migrate-set-capabilities xbzrle", "+error"): "Ferry refuses every capability it lacks (no XBZRLE)",
    ("migrate-set-capabilities xbzrle", "-return"): "as above",
    ("migration events, source", "!statuses"): "Ferry reports the stop-copy phase as QEMU's 'device' status",
    ("query-migrate, source", "-return.xbzrle-cache"): "no XBZRLE (QEMU's member is optional)",
    ("query-migrate, destination", "+return.total-time"):
        "the destination reports what it received (QEMU's destination only its status; the members are "
        "MigrationInfo's, optional)",
    ("query-migrate, destination", "+return.setup-time"): "as above",
    ("query-migrate, destination", "+return.ram"): "as above",
}
# QEMU 7.2's parameters Ferry does not implement (query-migrate-parameters lists only Ferry's).
for _names, _why in (
        (["announce-initial", "announce-max", "announce-rounds", "announce-step"],
         "no guest network to announce after the switch"),
        (["compress-level", "compress-threads", "compress-wait-thread", "decompress-threads"],
         "QEMU's legacy (deprecated) compression: Ferry compresses in multifd, with zstd"),
        (["multifd-zlib-level"], "no zlib: multifd-compression is none or zstd"),
        (["block-incremental"], "no block migration"),
        (["xbzrle-cache-size"], "no XBZRLE"),
        (["x-checkpoint-delay"], "no COLO"),
):
    for _n in _names:
        INTENDED[("query-migrate-parameters", "-return." + _n)] = _why
# Ferry's own members (x-) are intended by their prefix; see docs/qmp.md.


failures = 0


def ok(name):
    print(f"ok: {name}")


def fail(name, msg):
    global failures
    failures += 1
    print(f"FAIL: {name}: {msg}")


class QMP:
    def __init__(self, path):
        end = time.monotonic() + TIMEOUT
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.s.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)
        self.buf = b""
        self.events = []
        self.greeting = self.recv()

    def recv(self):
        while b"\n" not in self.buf:
            if not select.select([self.s], [], [], TIMEOUT)[0]:
                raise AssertionError("no reply")
            d = self.s.recv(65536)
            if not d:
                raise AssertionError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None):
        o = {"execute": name}
        if args is not None:
            o["arguments"] = args
        self.s.sendall((json.dumps(o) + "\n").encode())
        while True:
            m = self.recv()
            if "event" not in m:
                return m
            self.events.append(m)

    def wait_status(self, want):
        while True:
            if any(e["event"] == "MIGRATION" and e["data"]["status"] in want for e in self.events):
                return
            m = self.recv()
            if "event" in m:
                self.events.append(m)


class Engine:
    """Two processes of one engine: a stopped source and a deferred destination."""

    def __init__(self, kind, tmp):
        self.kind, self.tmp, self.procs = kind, tmp, []
        self.src = self.start("src", ["-S"])
        self.src_sock2 = os.path.join(tmp, f"{kind}-src-2.qmp")  # a second monitor (QEMU: one client each)
        self.dst = self.start("dst", ["--incoming", "defer"] if kind == "ferry" else ["-incoming", "defer"])

    def start(self, name, extra):
        sock = os.path.join(self.tmp, f"{self.kind}-{name}.qmp")
        err = open(os.path.join(self.tmp, f"{self.kind}-{name}.err"), "w")
        if self.kind == "ferry":
            argv = [FERRY, "host", "--guest", "mem=64M,vram=4M,vcpus=2,workload=random,rate=50M",
                    "--qmp", "unix:" + sock, "--qmp", "unix:" + sock[:-4] + "-2.qmp", *extra]
        else:
            argv = [QEMU, "-nodefaults", "-display", "none", "-m", "64", "-smp", "2", "-accel", "tcg",
                    "-qmp", f"unix:{sock},server=on,wait=off",
                    "-qmp", f"unix:{sock[:-4]}-2.qmp,server=on,wait=off", *extra]
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err))
        return QMP(sock)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


def shape(v):
    """The members and JSON types of v; a list is the merged shape of its elements."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        merged = None
        for e in v:
            s = shape(e)
            merged = merge(merged, s) if merged is not None else s
        return [merged] if merged is not None else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    return "null" if v is None else "str"


def merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if k in out else v
        return out
    return a


def differences(f, q, path, out):
    """Paths where Ferry's shape f and QEMU's q differ."""
    if isinstance(f, dict) and isinstance(q, dict):
        for k in f:
            p = f"{path}.{k}" if path else k
            if k not in q:
                if not k.startswith("x-"):
                    out.append("+" + p)
            else:
                differences(f[k], q[k], p, out)
        for k in q:
            if k not in f:
                out.append("-" + (f"{path}.{k}" if path else k))
                if isinstance(q[k], (dict, list)):
                    differences({} if isinstance(q[k], dict) else [], q[k], f"{path}.{k}" if path else k, out)
    elif isinstance(f, list) and isinstance(q, list):
        if f and q:
            differences(f[0], q[0], path + "[]", out)
        elif q and not f:
            out.append("-" + path + "[]")
            if isinstance(q[0], dict):
                for k in q[0]:
                    pass
        elif f and not q:
            out.append("+" + path + "[]")
    elif f != q:
        out.append("!" + path)
    return out


seen = set()


def compare(what, ferry, qemu, exact_errors=True):
    """One step's replies: the same shape, and for errors the same class and message."""
    diffs = differences(shape(ferry), shape(qemu), "", [])
    if exact_errors and isinstance(ferry, dict) and "error" in ferry and "error" in qemu:
        for k in ("class", "desc"):
            if ferry["error"].get(k) != qemu["error"].get(k):
                diffs.append(f"!error.{k}")
    for d in diffs:
        seen.add((what, d))
    whole = [d for d in diffs if (what, d) not in INTENDED and (what, d.split(".")[0]) not in INTENDED]
    # A difference inside an intended one ("!return" covers "!return.x") is intended too.
    whole = [d for d in whole if not any(d[1:].startswith(p[1:] + ".") or d[1:].startswith(p[1:] + "[")
                                         for w, p in INTENDED if w == what)]
    if whole:
        fail(what, f"unintended differences {whole}: ferry {json.dumps(ferry)[:400]} qemu {json.dumps(qemu)[:400]}")
    else:
        ok(f"{what}: {'same shape' if not diffs else 'differs only as intended: ' + ', '.join(diffs)}")


def both(engines, what, side, name, args=None, exact_errors=True):
    r = [getattr(e, side).cmd(name, args) for e in engines]
    compare(what, r[0], r[1], exact_errors)
    return r


QUERIES = ["query-version", "query-name", "query-uuid", "query-kvm", "query-cpus-fast", "query-block",
           "query-block-jobs", "query-pci", "query-machines", "query-target", "query-status",
           "query-migrate", "query-migrate-capabilities", "query-migrate-parameters", "query-commands"]

BAD = [  # (step, command, arguments): the same refusal expected from both
    ("nope", "nope", None),
    ("migrate-set-parameters type", "migrate-set-parameters", {"downtime-limit": "x"}),
    ("migrate-set-parameters negative", "migrate-set-parameters", {"max-bandwidth": -1}),
    ("migrate-set-parameters range", "migrate-set-parameters", {"multifd-channels": 0}),
    ("migrate-set-parameters unknown", "migrate-set-parameters", {"no-such": 1}),
    ("migrate-set-parameters x-max-passes", "migrate-set-parameters", {"x-max-passes": 1}),
    ("migrate-set-capabilities unknown", "migrate-set-capabilities",
     {"capabilities": [{"capability": "nope", "state": True}]}),
    ("migrate-set-capabilities missing", "migrate-set-capabilities", {}),
    ("migrate-set-capabilities state", "migrate-set-capabilities",
     {"capabilities": [{"capability": "multifd"}]}),
    ("migrate-set-capabilities xbzrle", "migrate-set-capabilities",
     {"capabilities": [{"capability": "xbzrle", "state": True}]}),
    ("migrate {}", "migrate", {}),
    ("migrate ftp", "migrate", {"uri": "ftp:x"}),
    ("migrate blk", "migrate", {"uri": "unix:/nonexistent", "blk": "x"}),
    ("migrate-start-postcopy, no migration", "migrate-start-postcopy", None),
    ("migrate-pause, no migration", "migrate-pause", None),
    ("migrate-recover on a source", "migrate-recover", {"uri": "unix:/nonexistent"}),
    ("migrate_cancel, no migration", "migrate_cancel", None),
    ("getfd without an fd", "getfd", {"fdname": "x"}),
    ("closefd unknown", "closefd", {"fdname": "x"}),
    ("remove-fd unknown", "remove-fd", {"fdset-id": 7}),
    ("remove-fd unknown fd", "remove-fd", {"fdset-id": 7, "fd": 99}),
    ("query-fdsets", "query-fdsets", None),
    ("add-fd without an fd", "add-fd", {"fdset-id": 1}),
]


def schema_args(q):
    """Per command: {argument: optional}, and "allow-oob" when it may run out of band."""
    s = {t["name"]: t for t in q.cmd("query-qmp-schema")["return"]}
    out = {}
    for t in s.values():
        if t["meta-type"] == "command":
            out[t["name"]] = {m["name"]: "default" in m for m in s[t["arg-type"]]["members"]}
            if t.get("allow-oob"):
                out[t["name"]][" allow-oob"] = True
    return out


# Arguments of a command that only one schema has: (command, "+name" or "-name") -> why.
INTENDED_ARGS = {
    ("migrate", "+channels"): "QEMU 8.2's MigrationChannel list",
    ("migrate", "!uri"): "optional since QEMU 8.2 (uri or channels)",
    ("migrate-incoming", "+channels"): "QEMU 8.2's",
    ("migrate-incoming", "+exit-on-error"): "QEMU 9.1's",
    ("migrate-incoming", "!uri"): "optional since QEMU 8.2",
    ("migrate-set-parameters", "*"): "Ferry's parameters: QEMU's names for those it implements, x- for its own",
}


def compare_schemas(engines):
    fa, qa = (schema_args(e.src) for e in engines)
    for cmd in sorted(fa):
        if cmd not in qa:
            if cmd.startswith("x-") or cmd == "query-guest-hash":
                ok(f"schema: {cmd} is Ferry's own")
            else:
                fail(f"schema: {cmd}", "QEMU 7.2 has no such command")
            continue
        diffs = [f"+{a}" for a in fa[cmd] if a not in qa[cmd]] + [f"-{a}" for a in qa[cmd] if a not in fa[cmd]]
        diffs += [f"!{a}" for a in fa[cmd] if a in qa[cmd] and fa[cmd][a] != qa[cmd][a]]
        if (cmd, "*") in INTENDED_ARGS:
            seen.add(("args " + cmd, "*"))
            ok(f"schema: {cmd}'s arguments differ as intended ({len(diffs)} names)")
            continue
        for d in diffs:
            seen.add(("args " + cmd, d))
        bad = [d for d in diffs if (cmd, d) not in INTENDED_ARGS]
        if bad:
            fail(f"schema: {cmd}'s arguments", f"unintended {bad}")
        else:
            ok(f"schema: {cmd}'s arguments are QEMU's" + (f" but {', '.join(diffs)} (intended)" if diffs else ""))


def oob(engines):
    """Out-of-band negotiation and refusals, on a new connection of each source."""
    conns = [QMP(e.src_sock2) for e in engines]
    compare("greeting, second connection", conns[0].greeting, conns[1].greeting)
    r = [c.cmd("qmp_capabilities", {"enable": ["foo"]}) for c in conns]
    compare("qmp_capabilities enable foo", r[0], r[1])
    r = [c.cmd("qmp_capabilities", {"enable": ["oob"]}) for c in conns]
    compare("qmp_capabilities enable oob", r[0], r[1])
    for what, msg in (("exec-oob of an in-band command", {"exec-oob": "query-status"}),
                      ("exec-oob and execute", {"exec-oob": "migrate-pause", "execute": "migrate-pause"}),
                      ("exec-oob migrate-pause, no migration", {"exec-oob": "migrate-pause"})):
        r = []
        for c in conns:
            c.s.sendall((json.dumps(msg) + "\n").encode())
            m = c.recv()
            while "event" in m:
                m = c.recv()
            r.append(m)
        compare(what, r[0], r[1])
    for c in conns:
        c.s.close()


def migrate(engines, tmp):
    for e in engines:
        for side in (e.src, e.dst):
            side.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
    for e in engines:
        uri = f"unix:{tmp}/{e.kind}-mig.sock"
        r = e.dst.cmd("migrate-incoming", {"uri": uri})
        assert r == {"return": {}}, r
        r = e.src.cmd("migrate", {"uri": uri})
        assert r == {"return": {}}, r
    for e in engines:
        e.src.wait_status(("completed", "failed"))
        e.dst.wait_status(("completed", "failed"))
    st = [[ev["data"]["status"] for ev in e.src.events if ev["event"] == "MIGRATION"] for e in engines]
    if st[0] != st[1]:
        seen.add(("migration events, source", "!statuses"))
        if ("migration events, source", "!statuses") not in INTENDED:
            fail("migration events, source", f"ferry {st[0]}, qemu {st[1]}")
    ok(f"migration events, source: ferry {st[0]}, qemu {st[1]}")
    both(engines, "query-migrate, source", "src", "query-migrate")
    both(engines, "query-migrate, destination", "dst", "query-migrate")
    both(engines, "query-status, source after", "src", "query-status")
    both(engines, "query-status, destination after", "dst", "query-status")


def main():
    if not QEMU or not os.access(QEMU, os.X_OK):
        print("conformance: qemu-system-x86_64 is not installed (scripts/deps.sh installs it); skipped")
        return 77
    tmp = tempfile.mkdtemp(prefix="ferry-conf.")
    engines = []
    try:
        engines = [Engine("ferry", tmp), Engine("qemu", tmp)]
        compare("greeting", engines[0].src.greeting, engines[1].src.greeting)
        for e in engines:
            for side in (e.src, e.dst):
                assert side.cmd("qmp_capabilities") == {"return": {}}
        for q in QUERIES:
            both(engines, q, "src", q)
        for step, name, args in BAD:
            both(engines, step, "src", name, args)
        both(engines, "query-status, destination", "dst", "query-status")
        both(engines, "migrate on a destination", "dst", "migrate", {"uri": "unix:/nonexistent"})
        both(engines, "stop on a destination", "dst", "stop")
        both(engines, "cont", "src", "cont")
        both(engines, "query-status, running", "src", "query-status")
        both(engines, "stop", "src", "stop")
        both(engines, "query-status, paused", "src", "query-status")
        compare_schemas(engines)
        oob(engines)
        migrate(engines, tmp)
        both(engines, "migrate-incoming, again", "dst", "migrate-incoming", {"uri": "unix:/nonexistent"})
    finally:
        for e in engines:
            e.close()
        shutil.rmtree(tmp, ignore_errors=True)
    stale = sorted(k for k in INTENDED if k not in seen) + \
        sorted(k for k in INTENDED_ARGS if ("args " + k[0], k[1]) not in seen)
    if stale:
        fail("every intended difference still occurs", f"no longer seen: {stale}")
    print(f"conformance: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
