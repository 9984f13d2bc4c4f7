#!/usr/bin/env python3
"""QMP responsiveness under load: query-migrate latency while a migration runs at full speed.

Starts a destination and a source `ferry host` (default: a 2 GiB guest, random fill, vCPUs
writing), starts an unthrottled migration over loopback TCP, and meanwhile sends query-migrate
back to back on the source's QMP socket (and, on a second connection, on the destination's),
timing each round trip from the write to the reply (each side's client is its own process).
Prints one JSON object: p50/p99/max in milliseconds per side, when the slowest reply happened
(seconds after `migrate`, and the status it reported), the sample count, and the migration's own
figures. On a small machine the maxima are scheduling delays: when both sides show the same
max_at_s, every process was waiting for a CPU at that moment. Usage:
  bench/qmp-latency.py [--ferry build/ferry] [--mem 2G] [--rate 100M] [--runs 3]
                       [--interval-ms 0] [--timeout 300]
"""
import argparse, json, multiprocessing, os, select, shutil, socket, statistics, subprocess, sys, tempfile, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class QMP:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.recv()
        self.cmd("qmp_capabilities")

    def recv(self, timeout=30):
        while b"\n" not in self.buf:
            if not select.select([self.s], [], [], timeout)[0]:
                raise TimeoutError("no reply")
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name} if args is None else {"execute": name, "arguments": args}
        self.s.sendall((json.dumps(msg) + "\n").encode())
        while True:
            m = self.recv()
            if "event" not in m:
                return m


def start_host(ferry, args, timeout):
    p = subprocess.Popen([ferry, "host", *args, "--json"], stdout=subprocess.PIPE, bufsize=0)
    end = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < end:
        if select.select([p.stdout], [], [], max(0.0, end - time.monotonic()))[0]:
            b = p.stdout.read(1)
            if not b:
                break
            line += b
    if b"listening" not in line:
        p.kill()
        raise RuntimeError(f"host did not start: {line!r}")
    return p


def spam(path, stop, out, interval):
    """Times query-migrate round trips until stop is set (runs in its own process,
    so the two sides never wait for each other's interpreter)."""
    q = QMP(path)
    lat = []
    while not stop.is_set():
        t = time.perf_counter()
        r = q.cmd("query-migrate")
        lat.append(((time.perf_counter() - t) * 1000.0, t, r.get("return", {}).get("status")))
        if "return" not in r:
            raise RuntimeError(f"query-migrate: {r}")
        if interval:
            time.sleep(interval / 1000.0)
    q.s.close()
    out.put(lat)


def summary(lat, t0):
    if not lat:
        return {"samples": 0}
    s = sorted(x[0] for x in lat)
    worst = max(lat)
    return {"samples": len(s), "p50_ms": round(statistics.median(s), 3),
            "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3), "max_ms": round(s[-1], 3),
            "max_at_s": round(worst[1] - t0, 3), "max_during": worst[2]}


def one(a):
    tmp = tempfile.mkdtemp(prefix="ferry-qmplat.")
    dsock, ssock = os.path.join(tmp, "dst.qmp"), os.path.join(tmp, "src.qmp")
    uri = f"tcp:127.0.0.1:{free_port()}"
    spec = f"mem={a.mem},vram=0,vcpus=2,fill=random,rate={a.rate}"
    procs = []
    try:
        procs.append(start_host(a.ferry, ["--guest", spec, "--incoming", uri, "--qmp", "unix:" + dsock], a.timeout))
        procs.append(start_host(a.ferry, ["--guest", spec, "--qmp", "unix:" + ssock], a.timeout))
        ctl = QMP(ssock)
        stop = multiprocessing.Event()
        queues = {"source": multiprocessing.Queue(), "destination": multiprocessing.Queue()}
        threads = [multiprocessing.Process(target=spam, args=(ssock, stop, queues["source"], a.interval_ms)),
                   multiprocessing.Process(target=spam, args=(dsock, stop, queues["destination"], a.interval_ms))]
        t0 = time.perf_counter()  # perf_counter is system-wide (CLOCK_MONOTONIC) on Linux
        r = ctl.cmd("migrate", {"uri": uri})
        if "return" not in r:
            raise RuntimeError(f"migrate: {r}")
        for t in threads:
            t.start()
        end = time.monotonic() + a.timeout
        while True:  # poll gently on the control connection; the spammers do the measuring
            info = ctl.cmd("query-migrate")["return"]
            if info["status"] in ("completed", "failed", "cancelled") or time.monotonic() > end:
                break
            time.sleep(0.05)
        stop.set()
        lat = {side: q.get(timeout=a.timeout) for side, q in queues.items()}
        for t in threads:
            t.join()
        for sock in (ssock, dsock):
            try:
                QMP(sock).cmd("quit")
            except (OSError, EOFError, TimeoutError):
                pass
        return {"migration": {"status": info["status"], "total_ms": info.get("total-time"),
                              "downtime_ms": info.get("downtime"),
                              "transferred": info.get("ram", {}).get("transferred")},
                "source": summary(lat["source"], t0), "destination": summary(lat["destination"], t0)}
    finally:
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default=os.path.join(os.path.dirname(__file__), "..", "build", "ferry"))
    ap.add_argument("--mem", default="2G")
    ap.add_argument("--rate", default="100M", help="dirty rate per vCPU (guest spec rate=)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=0, help="pause between queries (0: back to back)")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    runs = [one(a) for _ in range(a.runs)]
    worst = {side: max((r[side].get("max_ms", 0) for r in runs), default=0) for side in ("source", "destination")}
    print(json.dumps({"benchmark": "qmp-latency", "mem": a.mem, "rate_per_vcpu": a.rate,
                      "interval_ms": a.interval_ms, "worst_max_ms": worst, "runs": runs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
