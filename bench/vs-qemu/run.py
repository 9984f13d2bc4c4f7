#!/usr/bin/env python3
"""Ferry against QEMU, side by side: migrate a paused 2 GiB VM over loopback TCP with each.

Installs Debian's qemu-system-x86 if `qemu-system-x86_64` is absent (apt-get, as root), then for
each row migrates the same RAM contents with QEMU (TCG, memory-backend-file on /dev/shm, `-S`) and
with `ferry host` (synthetic guest, paused), both driven through raw QMP over a unix socket with the
same capabilities and parameters. Prints a human table on stderr and one JSON object on stdout.
See README.md beside this file. Usage:
  bench/vs-qemu/run.py [--runs 3] [--rows random-1,random-2,...] [--engines qemu,ferry[,bare]]
                       [--one-channel precopy|multifd] [--perf ROW] [--wait-idle 60] [--no-warmup]
                       [--ferry build/ferry] [--qemu qemu-system-x86_64] [--mem 2G] [--timeout 300]
                       [--vs-ferry PARAM=JSON]   (A/B: Ferry against Ferry with PARAM in QEMU's place)
                       [--base FERRY]            (A/B: Ferry against another ferry binary in QEMU's place)
                       [--tls qemu,ferry]   (TLS on these columns: tls-creds-x509 through QMP, certificates
                                             made at start with certtool)
                       [--tls-psk]   (with --tls: tls-creds-psk instead, a random key made with psktool)
"""
import argparse, json, mmap, os, platform, re, select, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time

GIB = 1 << 30
ROWS = {  # name: (fill, channels, compression)
    "random-1": ("random", 1, "none"),
    "random-2": ("random", 2, "none"),
    "random-4": ("random", 4, "none"),
    "random-zstd-2": ("random", 2, "zstd"),
    "text-zstd-2": ("text", 2, "zstd"),
    "zero-2": ("zero", 2, "none"),
}
# QEMU 7.2 medians measured on this kind of machine (../shared/reference/machine-baseline.md).
QEMU_BASELINE_GBPS = {"random-1": 1.69, "random-2": 1.55, "random-4": 1.67, "random-zstd-2": 0.87,
                      "zero-2": 8.5}
MAX_BANDWIDTH = 100 * GIB  # QEMU 7.2's default is 128 MiB/s
DOWNTIME_LIMIT_MS = 300
POLL_S = 0.02


class BenchError(Exception):
    pass


def log(*a):
    print("vs-qemu:", *a, file=sys.stderr, flush=True)


def parse_size(s):
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    return int(s[:-1] if s[-1:] in "KMGT" else s) * mult


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------------------------
# QMP: raw JSON over a unix socket, a deadline on every read.

class QMP:
    def __init__(self, path, deadline, proc=None):
        """Connects (retrying until the socket is there), reads the greeting, negotiates."""
        while True:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.s.connect(path)
                break
            except OSError as e:
                self.s.close()
                if proc is not None and proc.poll() is not None:
                    raise BenchError(f"process exited with {proc.returncode} before its QMP socket was up")
                if time.monotonic() > deadline:
                    raise BenchError(f"QMP socket {path} not up: {e}")
                time.sleep(0.05)
        self.buf = b""
        self.events = []
        greeting = self.recv(deadline)
        if "QMP" not in greeting:
            raise BenchError(f"unexpected QMP greeting {greeting}")
        self.ret("qmp_capabilities", deadline=deadline)

    def close(self):
        self.s.close()

    def recv(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                raise BenchError("QMP: no reply before the deadline")
            b = self.s.recv(65536)
            if not b:
                raise BenchError("QMP: connection closed")
            self.buf += b
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None, deadline=None):
        """The reply ({"return": ...} or {"error": ...}); events are kept aside."""
        deadline = deadline or time.monotonic() + 30
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self.recv(deadline)
            if "event" in m:
                self.events.append(m)
                continue
            return m

    def ret(self, name, args=None, deadline=None):
        r = self.cmd(name, args, deadline)
        if "return" not in r:
            raise BenchError(f"{name} {json.dumps(args) if args else ''}: {r.get('error', r)}")
        return r["return"]


# --------------------------------------------------------------------------------------------
# Processes and files: everything spawned or created is recorded and removed in a finally block.

class Janitor:
    def __init__(self):
        self.procs, self.files = [], []
        self.tmp = tempfile.mkdtemp(prefix="ferry-vs-qemu-")

    def spawn(self, argv, name, env=None):
        err = open(os.path.join(self.tmp, name + ".err"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                             start_new_session=True, env=env)
        err.close()
        p.errpath = os.path.join(self.tmp, name + ".err")
        self.procs.append(p)
        return p

    def stderr_tail(self, p, n=400):
        try:
            with open(p.errpath, "rb") as f:
                return f.read().decode(errors="replace").strip()[-n:]
        except OSError:
            return ""

    def kill(self, procs=None):
        procs = self.procs if procs is None else procs
        for p in procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} did not exit after SIGKILL")
            if p.stdout:
                p.stdout.close()
        self.procs = [p for p in self.procs if p not in procs]

    def shm(self, name):
        path = f"/dev/shm/ferry-vs-qemu-{os.getpid()}-{name}"
        self.files.append(path)
        return path

    def unlink(self, path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def cleanup(self):
        self.kill()
        for f in self.files:
            self.unlink(f)
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_line(proc, deadline):
    """One line from proc's binary stdout, or None at EOF or the deadline."""
    fd, buf = proc.stdout.fileno(), b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        b = os.read(fd, 4096)
        if not b:
            break
        buf += b
    return buf.decode(errors="replace") or None


# --------------------------------------------------------------------------------------------
# Source RAM contents for QEMU: a copy of the Ferry guest's own RAM (bit-identical).

def ferry_spec(a, fill, incoming=False):
    return f"mem={a.mem},vram=0,vcpus=2,paused,fill={fill}" + (",prealloc" if incoming and a.prealloc else "")


def split_cpus(a, incoming):
    """--split-cpus: the source's process on the first CPU, the destination's on the second, as two
    hosts would have them (every copy crosses CPUs), whatever the scheduler would choose."""
    return ["taskset", "-c", "1" if incoming else "0"] if a.split_cpus else []


def start_ferry(a, j, name, fill, extra, deadline, binary=None):
    sock = os.path.join(j.tmp, name + ".qmp")
    spec = ferry_spec(a, fill, "--incoming" in extra)
    # FERRY_LOG=debug: each migration thread's CPU time at its end (thread_cpu_ms)
    p = j.spawn(split_cpus(a, "--incoming" in extra)
                + [binary or a.ferry, "host", "--guest", spec, "--qmp", "unix:" + sock, "--json", *extra],
                name, env=dict(os.environ, FERRY_LOG="debug"))
    line = read_line(p, deadline)
    if not line or "listening" not in line:
        raise BenchError(f"ferry {name} did not start: {line!r} {j.stderr_tail(p)}")
    return p, sock


def make_source_file(a, j, fill, path):
    """Writes the RAM of a `ferry host` guest with this fill into path (a populated tmpfs file)."""
    deadline = time.monotonic() + a.timeout
    size = parse_size(a.mem)
    p, _ = start_ferry(a, j, "template-" + fill, fill, [], deadline)
    try:
        src = None
        for fd in os.listdir(f"/proc/{p.pid}/fd"):
            link = os.readlink(f"/proc/{p.pid}/fd/{fd}")
            if link.startswith("/memfd:") and "pc.ram" in link and os.stat(f"/proc/{p.pid}/fd/{fd}").st_size == size:
                src = f"/proc/{p.pid}/fd/{fd}"
        if not src:
            raise BenchError(f"no {size}-byte pc.ram memfd in ferry pid {p.pid}")
        copy_file(src, path, size)
        st = os.stat(path)
        if st.st_size != size or st.st_blocks * 512 < size:
            raise BenchError(f"{path}: size {st.st_size}, allocated {st.st_blocks * 512}, want {size} populated")
    finally:
        j.kill([p])


# --------------------------------------------------------------------------------------------
# One migration with each engine. Both return {total_ms, downtime_ms, setup_ms, wall_ms, ...}.

def params_for(row, a):
    fill, ch, comp = ROWS[row]
    multifd = ch > 1 or a.one_channel == "multifd"
    caps = [{"capability": "multifd", "state": True}] if multifd else []
    params = {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS}
    if multifd:
        params.update({"multifd-channels": ch, "multifd-compression": comp})
        if comp == "zstd":
            params["multifd-zstd-level"] = 1
    return caps, params


def perf_start(j, path, deadline):
    p = j.spawn(["perf", "record", "-a", "-F", "999", "-q", "-o", path], "perf")
    while not os.path.exists(path) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # perf opens its events after creating the file
    if p.poll() is not None:
        raise BenchError(f"perf record exited: {j.stderr_tail(p)}")
    return p


def perf_stop(j, p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    j.kill([p])


def perf_report(path, sort, limit):
    """The top lines of `perf report` as [percent, "what"] pairs."""
    try:
        r = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", sort,
                            "--percent-limit", str(limit)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [[0, f"perf report failed: {e}"]]
    out = []
    for line in r.stdout.splitlines():
        f = line.split(None, 1)
        if len(f) == 2 and f[0].endswith("%"):
            out.append([float(f[0][:-1]), " ".join(f[1].split())])
    return out


def proc_cpu_s(proc):
    """User + system CPU seconds of a process, all its threads (live and exited)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return None


THREAD_CPU_RE = re.compile(r"^ferry\[([^\]]+)\] debug: thread done: ([0-9.]+) ms of CPU, "
                           r"([0-9]+) voluntary and ([0-9]+) involuntary switches$")


def thread_cpu_ms(procs, timeout_s=3.0):
    """{thread: CPU ms} of each process's migration threads, and {thread: [voluntary,
    involuntary]} context switches, from their "thread done" debug lines (the threads end just
    after the status turns completed: wait for both sides' main)."""
    out, sw, deadline = [{}, {}], [{}, {}], time.monotonic() + timeout_s
    while True:
        for i, p in enumerate(procs):
            try:
                with open(p.errpath, errors="replace") as f:
                    for line in f:
                        m = THREAD_CPU_RE.match(line.strip())
                        if m:
                            out[i][m.group(1)] = float(m.group(2))
                            sw[i][m.group(1)] = [int(m.group(3)), int(m.group(4))]
            except OSError:
                pass
        if "mig/src/main" in out[0] and "mig/dst/main" in out[1] or time.monotonic() > deadline:
            return {"src": out[0], "dst": out[1]}, {"src": sw[0], "dst": sw[1]}
        time.sleep(0.05)


def make_certs(tmp):
    """A CA, a server certificate naming 127.0.0.1 and a client one, in one tls-creds-x509 directory."""
    d = os.path.join(tmp, "tls")
    os.mkdir(d)
    tmpl = {"ca": "cn = CA\nca\ncert_signing_key", "server": "cn = localhost\nip_address = 127.0.0.1\n"
            "tls_www_server\nsigning_key", "client": "cn = src\ntls_www_client\nsigning_key"}
    for n, t in tmpl.items():
        open(os.path.join(d, n + ".info"), "w").write(t + "\nexpiration_days = 2\n")
        sh(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", os.path.join(d, n + "-key.pem")])
        ca = [] if n == "ca" else ["--load-ca-certificate", os.path.join(d, "ca-cert.pem"),
                                   "--load-ca-privkey", os.path.join(d, "ca-key.pem")]
        sh(["certtool", "--generate-self-signed" if n == "ca" else "--generate-certificate",
            "--load-privkey", os.path.join(d, n + "-key.pem"), *ca, "--template", os.path.join(d, n + ".info"),
            "--outfile", os.path.join(d, n + "-cert.pem")])
    return d


def make_psk(tmp):
    """A tls-creds-psk directory: keys.psk with a random key for username qemu (QEMU's default)."""
    d = os.path.join(tmp, "psk")
    os.mkdir(d)
    sh(["psktool", "-u", "qemu", "-p", os.path.join(d, "keys.psk")])
    return d


def drive(row, a, sq, dq, port, deadline, j=None, perf_path=None, extra=None, procs=None, tls=False):
    """Sets both sides up, migrates, polls until done. Returns the run's figures.
    procs = (source, destination) processes: their CPU time over the migration is recorded.
    tls: both sides get tls-creds-x509 (or tls-creds-psk with --tls-psk) from a.tls_dir and tls-creds,
    the same QMP for either engine."""
    caps, params = params_for(row, a)
    if tls:
        for q, ep in ((dq, "server"), (sq, "client")):
            creds = ({"qom-type": "tls-creds-psk"} if a.tls_psk
                     else {"qom-type": "tls-creds-x509", "verify-peer": True})
            q.ret("object-add", dict(creds, id="tls0", dir=a.tls_dir, endpoint=ep), deadline)
        params = dict(params, **{"tls-creds": "tls0"})
    for q in (dq, sq):
        if caps:
            q.ret("migrate-set-capabilities", {"capabilities": caps}, deadline)
        q.ret("migrate-set-parameters", dict(params, **(extra or {})), deadline)
    uri = f"tcp:127.0.0.1:{port}"
    dq.ret("migrate-incoming", {"uri": uri}, deadline)
    settled = settle(a.settle, deadline)
    perf = perf_start(j, perf_path, deadline) if perf_path else None
    try:
        return dict(migrate(a, sq, dq, uri, deadline, procs), settle_s=settled)
    finally:
        if perf:
            perf_stop(j, perf)


def migrate(a, sq, dq, uri, deadline, procs=None):
    cpu0 = [proc_cpu_s(p) for p in procs] if procs else None
    t0 = time.monotonic()
    sq.ret("migrate", {"uri": uri}, deadline)
    src_done = dst_done = None
    info = None
    while src_done is None or dst_done is None:
        if time.monotonic() > deadline:
            raise BenchError(f"migration not finished after {a.timeout} s: {info}")
        if src_done is None:
            info = sq.ret("query-migrate", deadline=deadline)
            st = info.get("status")
            if st == "completed":
                src_done = time.monotonic()
            elif st in ("failed", "cancelled"):
                raise BenchError(f"source migration {st}: {info.get('error-desc', info)}")
        if dst_done is None:
            d = dq.ret("query-migrate", deadline=deadline)
            st = d.get("status")
            if st == "completed":
                dst_done = time.monotonic()
            elif st in ("failed", "cancelled"):
                raise BenchError(f"destination migration {st}: {d.get('error-desc', d)}")
        time.sleep(POLL_S)
    cpu = None
    if cpu0:
        cpu1 = [proc_cpu_s(p) for p in procs]
        if None not in cpu0 + cpu1:
            cpu = {"src_cpu_s": round(cpu1[0] - cpu0[0], 2), "dst_cpu_s": round(cpu1[1] - cpu0[1], 2)}
    # QEMU 7.2 can answer "completed" before it has filled in total-time (seen: 0 ms):
    # ask once more, and fall back to the wall time to the source's completion.
    final = sq.ret("query-migrate", deadline=deadline)
    if final.get("status") == "completed":
        info = final
    # Ferry's page path as each side chose it (x-user-copy "auto" is a probe's decision).
    path = {f"{side}_{k.replace('-', '_')}": q[k] for side, q in (("src", info), ("dst", dq.ret(
        "query-migrate", deadline=deadline))) for k in ("x-user-copy", "x-placement") if k in q}
    wall_fallback = not info.get("total-time")
    if wall_fallback:
        info["total-time"] = round((src_done - t0) * 1000)
    ram = info.get("ram", {})
    total = max(info["total-time"], 1)
    return {"gbps": round(parse_size(a.mem) / (total / 1000) / 1e9, 3), "total_ms": info["total-time"],
            **({"total_time_from_wall_clock": True} if wall_fallback else {}),
            "downtime_ms": info.get("downtime"), "setup_ms": info.get("setup-time"),
            "wall_to_dst_completed_ms": round((dst_done - t0) * 1000, 1),
            "transferred": ram.get("transferred"), "multifd_bytes": ram.get("multifd-bytes"),
            "zero_pages": ram.get("duplicate"), "normal_pages": ram.get("normal"),
            **({"x_multifd": info["x-multifd"]} if "x-multifd" in info else {}), **path,
            **(cpu or {})}


def qemu_argv(a, mem_path, qmp_sock, incoming):
    m = a.mem.upper().removesuffix("B").removesuffix("I")
    argv = split_cpus(a, incoming) + [a.qemu, "-name", "vs-qemu,debug-threads=on",  # for --perf
            "-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", m,
            "-object", f"memory-backend-file,id=mem,size={m},mem-path={mem_path},share=on"
            + (",prealloc=on" if incoming and a.prealloc else ""),
            "-machine", "pc,memory-backend=mem", "-qmp", f"unix:{qmp_sock},server=on,wait=off"]
    return argv + (["-incoming", "defer"] if incoming else [])


def copy_file(src, dst, size):
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        off, chunk = 0, 64 << 20
        while off < size:
            n = os.sendfile(fo.fileno(), fi.fileno(), off, min(chunk, size - off))
            if n <= 0:
                raise BenchError(f"short copy from {src} at {off}")
            off += n


def run_qemu(row, a, j, src_file, tag, perf_path=None):
    deadline = time.monotonic() + a.timeout
    dst_file = j.shm(f"qemu-dst-{tag}")
    j.unlink(dst_file)
    # The source's RAM is allocated afresh for every run, as a Ferry source fills its
    # RAM at start-up: both then take their memory from the same pool right before
    # the migration (see "Destination memory" in README.md).
    run_src = j.shm(f"qemu-src-{tag}")
    copy_file(src_file, run_src, parse_size(a.mem))
    ssock, dsock = os.path.join(j.tmp, f"qs-{tag}.qmp"), os.path.join(j.tmp, f"qd-{tag}.qmp")
    procs, qs = [], []
    try:
        d = j.spawn(qemu_argv(a, dst_file, dsock, True), f"qemu-dst-{tag}")
        s = j.spawn(qemu_argv(a, run_src, ssock, False), f"qemu-src-{tag}")
        procs = [d, s]
        dq = QMP(dsock, deadline, d)
        qs.append(dq)
        sq = QMP(ssock, deadline, s)
        qs.append(sq)
        try:
            return drive(row, a, sq, dq, free_port(), deadline, j, perf_path, procs=(s, d),
                         tls="qemu" in a.tls)
        except BenchError as e:
            raise BenchError(f"{e} [qemu src: {j.stderr_tail(s)}] [qemu dst: {j.stderr_tail(d)}]")
    finally:
        for q in qs:
            q.close()
        j.kill(procs)
        j.unlink(dst_file)
        j.unlink(run_src)


def run_bare(row, a):
    """The machine's limit for a row (issue 20): bench-bare-copy moves the same amount one-shot over
    as many loopback streams, into memory prepared as the destinations' is (written once from user
    space with --prealloc, else fresh), straight and through a user-space buffer; the better counts.
    Cold: into a memfd as guest RAM is, each transfer's destination given back and settled first
    as each migration's is (--settle), and before them the first-touch limit (touch: a thread per CPU
    writing every page of a settled fresh memfd, no network).
    Preallocated: once more straight with --pin cross (cross_cpu), each stream's receiving thread
    on another CPU than its sending one, as between two hosts; unpinned, the scheduler keeps a
    stream's two ends on one CPU, and that goes faster (measured 2026-12-06, 2 streams: 6.8-6.9
    GB/s pinned to one CPU, 4.6 across; Ferry's channels gain nothing from it)."""
    fill, ch, comp = ROWS[row]
    argv = [a.bare, "--mem", str(parse_size(a.mem)), "--streams", str(ch)]
    if not a.prealloc:
        argv += ["--cold", "--memfd", "--settle", str(a.settle)]

    def bare(extra):
        p = subprocess.run(argv + extra, capture_output=True, text=True, timeout=a.timeout)
        if p.returncode:
            raise BenchError(f"bench-bare-copy: {p.stderr.strip()[-300:]}")
        return json.loads(p.stdout)

    x = bare(["--pin", "cross"] if a.split_cpus else [])
    cross = (None if not a.prealloc else x["direct"] if a.split_cpus  # measured just now
             else bare(["--only", "direct", "--pin", "cross"])["direct"])
    best = max(("direct", "bounce"), key=lambda v: x[v]["gbps"])
    b = x[best]
    return {"gbps": x["best_gbps"], "downtime_ms": None, "cross_cpu": cross,
            "wall_to_dst_completed_ms": round(b["seconds"] * 1000, 1),
            "src_cpu_s": b["cpu_s_sender"], "dst_cpu_s": b["cpu_s_receiver"],
            "cpu_s_per_gib": b["cpu_s_per_gib"], "best": best,
            "first_touch_gbps": x["touch"]["gbps"] if "touch" in x else None,
            "variants": {v: x[v] for v in ("direct", "bounce", "touch") if v in x}}


def bare_applies(row):
    """Incompressible data only: the bare program sends every byte as it is."""
    return ROWS[row][0] == "random" and ROWS[row][2] == "none"


def run_engine(eng, row, a, j, src_file, tag, perf_path=None):
    """One run of eng; with --vs-ferry or --base, "qemu" is Ferry with those parameters or from that
    binary (the B of an A/B)."""
    if eng == "bare":
        return run_bare(row, a)
    if eng == "qemu" and (a.vs_ferry or a.base):
        return run_ferry(row, a, j, "b-" + tag, perf_path, a.vs_ferry, a.base or a.ferry)
    if eng == "qemu":
        return run_qemu(row, a, j, src_file, tag, perf_path)
    return run_ferry(row, a, j, tag, perf_path)


def run_ferry(row, a, j, tag, perf_path=None, extra=None, binary=None):
    deadline = time.monotonic() + a.timeout
    fill = ROWS[row][0]
    procs, qs = [], []
    try:
        d, dsock = start_ferry(a, j, f"ferry-dst-{tag}", fill, ["--incoming", "defer"], deadline, binary)
        procs.append(d)
        s, ssock = start_ferry(a, j, f"ferry-src-{tag}", fill, [], deadline, binary)
        procs.append(s)
        dq = QMP(dsock, deadline, d)
        qs.append(dq)
        sq = QMP(ssock, deadline, s)
        qs.append(sq)
        try:
            r = drive(row, a, sq, dq, free_port(), deadline, j, perf_path,
                      dict(a.ferry_set, **(extra or {})), (s, d),
                      tls=("qemu" if extra is not None else "ferry") in a.tls)
            cpu, switches = thread_cpu_ms((s, d))
            return dict(r, thread_cpu_ms=cpu, thread_switches=switches)
        except BenchError as e:
            raise BenchError(f"{e} [ferry src: {j.stderr_tail(s)}] [ferry dst: {j.stderr_tail(d)}]")
    finally:
        for q in qs:
            q.close()
        j.kill(procs)


# --------------------------------------------------------------------------------------------

def ensure_qemu(a):
    if shutil.which(a.qemu):
        return None
    if a.qemu != "qemu-system-x86_64":
        raise BenchError(f"{a.qemu} not found")
    if os.geteuid() != 0:
        raise BenchError("qemu-system-x86_64 is absent and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing qemu-system-x86 (apt-get)")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"]
    if subprocess.run(cmd, env=env, stdout=sys.stderr, timeout=1200).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=sys.stderr, timeout=600)
        if subprocess.run(cmd, env=env, stdout=sys.stderr, timeout=1200).returncode:
            raise BenchError("apt-get install qemu-system-x86 failed")
    if not shutil.which(a.qemu):
        raise BenchError("qemu-system-x86_64 still absent after installing qemu-system-x86")
    return "installed qemu-system-x86"


def sh(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info(a):
    info = {"kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    v = sh([a.qemu, "--version"])
    info["qemu"] = v.splitlines()[0] if v else None
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    rev = sh(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    info["ferry_commit"] = (rev + ("+dirty" if dirty else "")) if rev else None
    info["ferry_binary"] = os.path.abspath(a.ferry)
    return info


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_busy_s():
    """Seconds of user + nice + system CPU time on the whole machine since boot (all CPUs).
    irq/softirq time is left out: loopback TCP work done for this run may be booked there."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2]) / CLK_TCK


def own_cpu_s():
    """CPU time of this process and of its reaped children (every run's processes are reaped)."""
    return sum(os.times()[:4])


def wait_idle(limit_s, threshold=0.15):
    """Waits (at most limit_s) until the machine's other load is below threshold of all CPUs.
    Returns the busy share last seen."""
    end = time.monotonic() + limit_s
    while True:
        b0, t0 = cpu_busy_s(), time.monotonic()
        time.sleep(0.5)
        share = (cpu_busy_s() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if share < threshold or time.monotonic() >= end:
            return round(share, 2)


def memcpy_gbps(size=1 << 30, reps=3):
    """Best of reps copies of a written buffer into a touched one. The source is written, not
    left zero: untouched, its every page would be the kernel's one zero page, always in cache
    (the baseline measured 13.7 GB/s for 1 GiB that way)."""
    a, b = bytearray(b"\x5a") * size, bytearray(size)
    b[:] = a
    best = 0
    for _ in range(reps):
        t = time.perf_counter()
        b[:] = a
        best = max(best, size / (time.perf_counter() - t) / 1e9)
    return round(best, 2)


def loopback_gbps(seconds=0.5, reps=3):
    """Best of reps one-stream loopback TCP transfers with 1 MiB writes (baseline: 4.1-5.0 GB/s)."""
    best = 0
    for _ in range(reps):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname(), timeout=10)
        s, _ = srv.accept()
        srv.close()
        s.settimeout(10)
        got = [0]

        def rx():
            mv = memoryview(bytearray(1 << 20))
            try:
                while True:
                    n = s.recv_into(mv)
                    if not n:
                        break
                    got[0] += n
            except OSError:
                pass
        t = threading.Thread(target=rx)
        t.start()
        data, t0 = b"\1" * (1 << 20), time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(15)
        best = max(best, got[0] / (time.monotonic() - t0) / 1e9)
        c.close()
        s.close()
    return round(best, 2)


REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"


def reported_kib():
    try:
        with open(REPORTED_KIB) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def settle(quiet_s, deadline, limit_s=30.0):
    """This machine is a VM that hands freed memory back to its host (free page reporting), and
    a first write to such memory costs ~10x a write to memory it still holds. Freed memory is
    reported over seconds, so a destination started right after another run's processes exit
    gets some warm memory by chance. Before each timed migration, wait until no memory has
    been reported for quiet_s seconds, so that every destination starts cold. Returns the
    seconds waited (None where the kernel does not report)."""
    if quiet_s <= 0 or reported_kib() is None:
        return None
    t0 = last_change = time.monotonic()
    last = reported_kib()
    while True:
        now = time.monotonic()
        if now - last_change >= quiet_s or now - t0 >= limit_s or now > deadline:
            return round(now - t0, 1)
        time.sleep(0.25)
        cur = reported_kib()
        if cur != last:
            last, last_change = cur, time.monotonic()


def first_touch_gbps(mib=256):
    """GB/s of first writes (one byte per 4 KiB page) to newly mapped memory: the cost of
    populating a destination, which on this machine depends on what its host holds."""
    m = mmap.mmap(-1, mib << 20)
    try:
        t = time.perf_counter()
        for off in range(0, mib << 20, 4096):
            m[off] = 1
        return round((mib << 20) / (time.perf_counter() - t) / 1e9, 2)
    finally:
        m.close()


def probes():
    return {"memcpy_gbps": memcpy_gbps(), "loopback_1_stream_gbps": loopback_gbps(),
            "first_touch_gbps": first_touch_gbps(), "busy_share": wait_idle(0)}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def thread_cpu_summary(runs, size):
    """Median CPU ms per GiB of each Ferry migration thread over the runs (None: no lines)."""
    per = {"src": {}, "dst": {}}
    for r in runs:
        for side, threads in (r.get("thread_cpu_ms") or {}).items():
            for name, ms in threads.items():
                per[side].setdefault(name, []).append(ms / (size / GIB))
    out = {side: {n: round(statistics.median(v), 1) for n, v in sorted(t.items())} for side, t in per.items()}
    return out if out["src"] or out["dst"] else None


def cross_cpu_summary(bare_runs, f):
    """The bare program with each stream's ends on different CPUs (run_bare), beside Ferry."""
    g = [r["cross_cpu"]["gbps"] for r in bare_runs if r.get("cross_cpu")]
    if not g:
        return {}
    m = round(statistics.median(g), 2)
    return {"bare_cross_cpu_gbps": m, "bare_cross_cpu_gbps_min_max": [min(g), max(g)],
            "ferry_vs_bare_cross_cpu": round(f["gbps"] / m, 2) if f else None}


def summarise(runs, size):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    g = [r["gbps"] for r in ok]
    dt = [r["downtime_ms"] for r in ok if r["downtime_ms"] is not None]
    w = [r["wall_to_dst_completed_ms"] for r in ok]
    cpu = [r["src_cpu_s"] + r["dst_cpu_s"] for r in ok if "src_cpu_s" in r]
    return {"gbps": round(statistics.median(g), 2), "min": round(min(g), 2), "max": round(max(g), 2),
            "cpu_s": round(statistics.median(cpu), 2) if cpu else None,
            "downtime_ms": statistics.median(dt) if dt else None,
            "wall_gbps": round(statistics.median(size / 1e9 / (x / 1000) for x in w), 2)}


def table(rows, a):
    hdr = (f"{'row':<15} {'QEMU GB/s [min..max]':<22} {'Ferry GB/s [min..max]':<22} {'ratio':>6} "
           f"{'QEMU dt ms':>10} {'Ferry dt ms':>11} {'CPU s Q/F':>11}")
    out = [hdr, "-" * len(hdr)]
    for name, r in rows.items():
        def cell(e):
            s = r.get("_" + e)
            return f"{s['gbps']:.2f} [{s['min']:.2f}..{s['max']:.2f}]" if s else "failed"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        qd = r.get("qemu_downtime_ms")
        fd = r.get("ferry_downtime_ms")
        cpu = "/".join("-" if r.get(e) is None else f"{r[e]:.2f}" for e in ("qemu_cpu_s", "ferry_cpu_s"))
        out.append(f"{name:<15} {cell('qemu'):<22} {cell('ferry'):<22} {ratio:>6} "
                   f"{'-' if qd is None else qd:>10} {'-' if fd is None else fd:>11} {cpu:>11}")
    return "\n".join(out)


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ferry", default=os.path.join(here, "..", "..", "build", "ferry"))
    ap.add_argument("--bare", default=os.path.join(here, "..", "..", "build", "bench", "bench-bare-copy"),
                    help="the bare program (engine bare)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--mem", default="2G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--one-channel", choices=("precopy", "multifd"), default="precopy",
                    help="what the 1-channel row runs on both engines (default: plain precopy)")
    ap.add_argument("--engines", default="qemu,ferry", help="qemu, ferry or both (default)")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--settle", type=float, default=3.0, metavar="S",
                    help="before each timed migration, wait until the kernel has reported no freed "
                         "memory to the host for S seconds (every destination starts cold; 0: don't)")
    ap.add_argument("--prealloc", action="store_true",
                    help="both destinations allocate all guest RAM before the migration starts "
                         "(QEMU: memory-backend-file prealloc=on; Ferry: --guest ...,prealloc)")
    ap.add_argument("--perf", metavar="ROW", help="after ROW's runs, one more run of each engine under "
                    "`perf record -a` (not counted); top threads and symbols go into the JSON")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for any one run")
    ap.add_argument("--wait-idle", type=float, default=60,
                    help="before each run, wait up to this many seconds for the machine's load to "
                         "drop below 15%% of its CPUs (0: do not wait)")
    ap.add_argument("--ferry-set", action="append", default=[], metavar="PARAM=JSON",
                    help="one more migrate-set-parameters argument for both Ferry sides, e.g. "
                         "x-placement='\"pwrite\"' or x-send-splice=false (repeatable)")
    ap.add_argument("--vs-ferry", action="append", default=[], metavar="PARAM=JSON",
                    help="A/B instead of QEMU: the 'qemu' columns are Ferry with these parameters "
                         "too (e.g. x-checksum=false), interleaved with plain Ferry; ratio = A/B")
    ap.add_argument("--base", metavar="FERRY",
                    help="A/B instead of QEMU: the 'qemu' columns are this other ferry binary (a build "
                         "before a change; build/ferry links libferry statically), interleaved; ratio = A/B")
    ap.add_argument("--split-cpus", action="store_true",
                    help="each source on CPU 0 and each destination on CPU 1 (taskset): the same mode in "
                         "every run, for A/Bs of CPU per byte (the bare program is then run --pin cross)")
    ap.add_argument("--tls", default="", metavar="ENGINES",
                    help="TLS (tls-creds-x509, verify-peer) on these columns: qemu, ferry or both; with "
                         "--vs-ferry, 'qemu' is the B column (e.g. --tls ferry --vs-ferry x-checksum=true: "
                         "Ferry with TLS against Ferry without)")
    ap.add_argument("--tls-psk", action="store_true",
                    help="with --tls: tls-creds-psk (a random key made with psktool) instead of tls-creds-x509")
    a = ap.parse_args()
    a.tls = [e for e in a.tls.split(",") if e]
    if set(a.tls) - {"qemu", "ferry"}:
        ap.error("--tls: qemu, ferry or both")
    try:
        a.ferry_set = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.ferry_set)}
        a.vs_ferry = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.vs_ferry)}
    except ValueError as e:
        ap.error(f"--ferry-set/--vs-ferry: {e}")
    rows = [r for r in a.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            ap.error(f"unknown row {r} (known: {', '.join(ROWS)})")
    engines = [e for e in a.engines.split(",") if e]
    if not engines or set(engines) - {"qemu", "ferry", "bare"}:
        ap.error("--engines: qemu, ferry, bare (the machine's limit, bench-bare-copy), comma-separated")
    if "bare" in engines and not os.access(a.bare, os.X_OK):
        ap.error(f"--engines bare: {a.bare} not found (ninja -C build)")
    if a.perf and a.perf not in rows:
        ap.error(f"--perf {a.perf}: not one of the rows run")
    if a.perf and not shutil.which("perf"):
        ap.error("--perf needs perf (Debian package linux-perf)")
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    result = {"benchmark": "vs-qemu", "unit": "GB/s = guest RAM / total-time (1e9 bytes/s)",
              "guest": {"mem": a.mem, "paused": True, "transport": "tcp loopback"}}
    j = Janitor()
    runs = {r: {"qemu": [], "ferry": [], "bare": []} for r in rows}
    profiles = {}
    try:
        note = ensure_qemu(a)
        if not os.access(a.ferry, os.X_OK):  # also needed for QEMU: its RAM is a copy of Ferry's
            raise BenchError(f"{a.ferry} not found: build it with `ninja -C build`")
        a.tls_dir = (make_psk if a.tls_psk else make_certs)(j.tmp) if a.tls else None
        result["machine"] = machine_info(a)
        if note:
            result["machine"]["note"] = note
        result["machine"]["loadavg_start"] = loadavg()
        result["machine"]["probes_start"] = probes()  # compare with machine-baseline.md
        result["settings"] = {
            "max_bandwidth": MAX_BANDWIDTH, "downtime_limit_ms": DOWNTIME_LIMIT_MS, "runs": a.runs,
            "one_channel_row": a.one_channel + (" on both engines" if a.one_channel == "precopy"
                                                else " with multifd-channels 1 on both engines"),
            "qemu": "-accel tcg -S, memory-backend-file on /dev/shm (share=on), -incoming defer, "
                    "source file = a copy of ferry's guest RAM for the same fill (bit-identical)",
            "ferry": "ferry host --guest " + ferry_spec(a, "FILL") + "; destination --incoming defer",
            "order": "per run, QEMU and Ferry alternate which goes first",
            "destination_ram": ("preallocated before the migration (--prealloc)" if a.prealloc
                                else "allocated as pages arrive"),
            "settle_s": a.settle,
            "ferry_extra_parameters": a.ferry_set,
            "vs_ferry": a.vs_ferry or None, "base": a.base,
            "split_cpus": ("sources on CPU 0, destinations on CPU 1, the bare program --pin cross: "
                           "issue 20's targets are judged unpinned" if a.split_cpus else None),
            "tls": a.tls or None,
            "tls_creds": ("tls-creds-psk" if a.tls_psk else "tls-creds-x509") if a.tls else None}
        fills = []
        for r in rows:
            if ROWS[r][0] not in fills:
                fills.append(ROWS[r][0])
        warm = not a.no_warmup
        n = 0
        for fill in fills:
            src_file = j.shm("qemu-src-" + fill)
            t = time.monotonic()
            make_source_file(a, j, fill, src_file)
            log(f"source file for fill={fill}: {time.monotonic() - t:.1f} s")
            try:
                for row in [r for r in rows if ROWS[r][0] == fill]:
                    if warm:  # one throwaway run of each engine
                        warm = False
                        for eng in [e for e in engines if e != "bare"]:
                            try:
                                x = run_engine(eng, row, a, j, src_file, "warm")
                                log(f"warm-up {row} {eng}: {x['gbps']} GB/s (discarded)")
                            except BenchError as e:
                                log(f"warm-up {row} {eng}: {e}")
                    for i in range(a.runs):
                        order = engines if n % 2 == 0 else engines[::-1]
                        n += 1
                        for eng in order:
                            if eng == "bare" and not bare_applies(row):
                                continue
                            idle = wait_idle(a.wait_idle) if a.wait_idle > 0 else None
                            b0, c0, t0 = cpu_busy_s(), own_cpu_s(), time.monotonic()
                            try:
                                x = run_engine(eng, row, a, j, src_file, f"{row}-{i}")
                            except BenchError as e:
                                x = {"error": str(e)[:1500]}
                            span = time.monotonic() - t0
                            other = (cpu_busy_s() - b0) - (own_cpu_s() - c0)
                            # CPU share used by processes other than this run's (other sessions' tests)
                            x["other_cpu_share"] = round(max(other, 0) / (span * (os.cpu_count() or 1)), 2)
                            x["busy_share_before"] = idle
                            runs[row][eng].append(x)
                            log(f"{row} run {i + 1}/{a.runs} {eng}: " +
                                (f"{x['gbps']} GB/s, downtime {x['downtime_ms']} ms, "
                                 f"dst done after {x['wall_to_dst_completed_ms']} ms"
                                 if "error" not in x else "ERROR " + x["error"][:300]))
                    if row == a.perf:  # one more run of each engine, profiled, not counted
                        for eng in engines:
                            path = os.path.join(j.tmp, f"perf-{eng}.data")
                            try:
                                x = run_engine(eng, row, a, j, src_file, "perf", path)
                                profiles[eng] = {
                                    "gbps": x["gbps"],
                                    "threads": perf_report(path, "comm", 1),
                                    "symbols": perf_report(path, "comm,dso,sym", 0.8)}
                                log(f"profiled {row} {eng}: {x['gbps']} GB/s")
                            except BenchError as e:
                                profiles[eng] = {"error": str(e)[:1500]}
            finally:
                j.unlink(src_file)
        result["machine"]["loadavg_end"] = loadavg()
        result["machine"]["probes_end"] = probes()
    except BenchError as e:
        result["error"] = str(e)
    except KeyboardInterrupt as e:
        result["error"] = f"interrupted ({e})"
    finally:
        j.cleanup()

    out = {}
    for row in rows:
        size = parse_size(a.mem)
        q, f = summarise(runs[row]["qemu"], size), summarise(runs[row]["ferry"], size)
        fill, ch, comp = ROWS[row]
        out[row] = {
            "fill": fill, "channels": ch, "compression": comp,
            "qemu_gbps": q and q["gbps"], "ferry_gbps": f and f["gbps"],
            "ratio": round(f["gbps"] / q["gbps"], 2) if q and f else None,
            "qemu_downtime_ms": q and q["downtime_ms"], "ferry_downtime_ms": f and f["downtime_ms"],
            "qemu_gbps_min_max": q and [q["min"], q["max"]], "ferry_gbps_min_max": f and [f["min"], f["max"]],
            "qemu_gbps_to_dst_completed": q and q["wall_gbps"],
            "ferry_gbps_to_dst_completed": f and f["wall_gbps"],
            "ratio_to_dst_completed": round(f["wall_gbps"] / q["wall_gbps"], 2) if q and f else None,
            "qemu_cpu_s": q and q["cpu_s"], "ferry_cpu_s": f and f["cpu_s"],
            "qemu_baseline_gbps": QEMU_BASELINE_GBPS.get(row),
            "ferry_thread_cpu_ms_per_gib": thread_cpu_summary(runs[row]["ferry"], size),
            "runs": runs[row], "_qemu": q, "_ferry": f}
        b = summarise(runs[row]["bare"], size)
        if b:
            gib = size / GIB
            out[row].update({
                "bare_gbps": b["gbps"], "bare_gbps_min_max": [b["min"], b["max"]],
                "ferry_vs_bare": round(f["gbps"] / b["gbps"], 2) if f else None,
                **cross_cpu_summary(runs[row]["bare"], f),
                "qemu_vs_bare": round(q["gbps"] / b["gbps"], 2) if q else None,
                "cpu_s_per_gib": {"bare": round(b["cpu_s"] / gib, 2),
                                  "ferry": f and f["cpu_s"] and round(f["cpu_s"] / gib, 2),
                                  "qemu": q and q["cpu_s"] and round(q["cpu_s"] / gib, 2)}})
            touch = [x["first_touch_gbps"] for x in runs[row]["bare"] if x.get("first_touch_gbps")]
            if touch:  # cold: the first-touch limit, settled, beside the bare program's
                t = round(statistics.median(touch), 2)
                out[row].update({"first_touch_gbps": t, "first_touch_gbps_min_max": [min(touch), max(touch)],
                                 "ferry_vs_first_touch": round(f["gbps"] / t, 2) if f else None,
                                 "qemu_vs_first_touch": round(q["gbps"] / t, 2) if q else None})
    if out:
        print(table(out, a), file=sys.stderr)
        for row, r in out.items():
            if r.get("bare_gbps"):
                print(f"{row:<15} bare program {r['bare_gbps']:.2f} GB/s {r['bare_gbps_min_max']}: "
                      f"ferry/bare {r['ferry_vs_bare']}, qemu/bare {r['qemu_vs_bare']}; CPU s per GiB "
                      f"{r['cpu_s_per_gib']}", file=sys.stderr)
            if r.get("bare_cross_cpu_gbps"):
                print(f"{row:<15} bare program, each stream's ends on two CPUs {r['bare_cross_cpu_gbps']:.2f} "
                      f"GB/s {r['bare_cross_cpu_gbps_min_max']}: ferry/bare {r['ferry_vs_bare_cross_cpu']}",
                      file=sys.stderr)
            if r.get("first_touch_gbps"):
                print(f"{row:<15} first touch (settled memfd, no network) {r['first_touch_gbps']:.2f} GB/s "
                      f"{r['first_touch_gbps_min_max']}: ferry/first-touch {r['ferry_vs_first_touch']}, "
                      f"qemu/first-touch {r['qemu_vs_first_touch']}", file=sys.stderr)
    for r in out.values():
        del r["_qemu"], r["_ferry"]
    result["rows"] = out
    every = [x for r in runs.values() for e in r.values() for x in e]
    result["noise"] = {"runs": len(every),
                       "runs_with_other_cpu_share_over_0.1": sum(x["other_cpu_share"] > 0.1 for x in every),
                       "note": "other_cpu_share: CPU used during a run by other processes (another "
                               "session's tests), as a share of all CPUs"}
    if any("Capability 'multifd' is not supported" in x.get("error", "") for x in every):
        result["ferry_multifd_unsupported"] = ("this build's `ferry host` QMP refuses the multifd "
                                               "capability: every Ferry multifd row failed")
    if a.perf:
        result["profiles"] = {"row": a.perf, "how": "perf record -a -F 999 over the migration; "
                              "share of all samples (both CPUs, idle included)", **profiles}

    def target(desc, row, key, at_least):
        v = out.get(row, {}).get(key)
        return {"target": desc, "value": v, "pass": v is not None and v >= at_least}
    targets = [target("random, 2 channels: ferry >= 6 GB/s", "random-2", "ferry_gbps", 6),
               target("random, zstd, 2 channels: ferry >= 2.5 GB/s", "random-zstd-2", "ferry_gbps", 2.5)]
    targets += [target(f"{row}: ratio ferry/qemu >= 2", row, "ratio", 2) for row in out
                if out[row]["qemu_gbps"] is not None]
    limit = (0.85, "preallocated destination") if a.prealloc else (0.9, "cold destination")
    targets += [target(f"{row}: ferry >= {limit[0]:.0%} of the bare program ({limit[1]}, issue 20)",
                       row, "ferry_vs_bare", limit[0]) for row in out if out[row].get("bare_gbps")]
    targets += [target(f"{row}: ferry >= 90% of the first-touch limit (cold destination, issue 20)",
                       row, "ferry_vs_first_touch", 0.9) for row in out if out[row].get("first_touch_gbps")]
    result["targets"] = targets
    result["all_targets_pass"] = all(t["pass"] for t in targets) and "error" not in result
    print(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
