#!/usr/bin/env python3
"""Precopy benchmark: migrate a paused guest over loopback, one channel.

For each destination mode and each fill (random, zero = populated zero pages, none = never
touched) it starts a destination and a source `ferry host` process, migrates through QMP
(`ferry migrate`), and reports GB/s
(guest RAM size / total migration time), downtime and the destination's startup time (spawn to
its "listening" line). Prints one JSON object. Usage:
  bench/precopy.py [--ferry build/ferry] [--mem 2G] [--runs 3] [--fills random,zero,none]
                   [--dest-modes default,prealloc,thp] [--timeout 300]
  bench/precopy.py --scale 1G,2G,4G,8G [--runs 2] [--settle 5] [--no-bare] [--bare build/bench/bench-bare-copy]
  bench/precopy.py --downtime-grid [--mem 512M] [--rates idle,50M,200M,400M]
                   [--bandwidths 0,1G,200M] [--limits 50,300] [--grid-timeout 30] [--grid-channels N]
                   [--grid-fill none]

--downtime-grid (downtime that keeps its promise): a running guest (2 vCPUs, workload random,
each vCPU dirtying RATE per second; idle: workload idle) migrated with every max-bandwidth and
downtime-limit, to a destination as is (cold). Per cell: whether it switched over, the actual
downtime, the downtime the switchover was decided on (x-downtime-split.expected) and their
ratio, judged in microseconds (x-downtime-split's downtime-us and expected-us: whole ms say
nothing of 20% of a 3 ms downtime). Verdicts: every switchover within its limit; every estimate
within 20% of the actual.
A cell that does not converge within --grid-timeout seconds is cancelled (not a switchover).
--grid-channels N: the same over multifd with N channels (default: the main connection alone).
--grid-fill F: the guests' RAM at start (the synthetic guest's fill=; default: its own, all of
RAM written). none: RAM the guest populates as it runs, so later passes carry pages the
destination never had (first touch there).

--scale (how cost grows with the guest): paused random guests of each size, preallocated
destination, the sizes interleaved (ascending, then descending, ...) with --settle seconds
between runs. Per size: time per GiB, setup-time, and the memory the migration itself costs
each side: the peak of the process's anonymous RSS (RssAnon, /proc/PID/status, sampled every
10 ms; the guest's RAM is a memfd, counted in RssShmem instead) during the migration, per GiB of
guest: an upper bound of libferry's own (bitmaps, buffers, queues: the rest is the daemon's and
the synthetic guest's bookkeeping), and its growth during the migration. Ratios: the largest time per GiB over the smallest (target
<= 1.10), setup-time's spread.
The machine's own growth beside Ferry's (unless --no-bare): in the same rounds, each size also
runs the bare program (build/bench/bench-bare-copy --mem SIZE, 1 stream, preallocated
destination: what this machine moves one-shot over loopback with nothing a migration adds), never
at the same time as Ferry, the order within each size alternated (Ferry first in even rounds, bare
first in odd ones), settled between runs. Per size: the bare ms per GiB (1000 * 2^30 / (best_gbps *
1e9), its better variant, direct or bounce) and Ferry's median over the bare median; in ratios, the
bare program's own largest ms per GiB over its smallest, so that "time per GiB constant within 10%"
can be read against what the machine itself does as the guest grows (at 8G the bare program maps
8 GiB in each of its two processes, as Ferry does).

Destination modes (the issue: the destination's first write to fresh memfd memory is the main
cost of an incoming migration on this machine):
  default   as is: the destination's RAM is faulted in page by page as pages arrive;
  prealloc  the destination guest spec gets ",prealloc": it populates all its RAM at creation
            (like QEMU's prealloc=on), before it listens, so that time is in the destination's
            startup time, not in the migration time;
  thp       /sys/kernel/mm/transparent_hugepage/shmem_enabled set to "advise" for the run (the
            synthetic guest already madvise(MADV_HUGEPAGE)s its RAM), then restored to its saved
            value whatever happens. Needs root; skipped (with the reason) otherwise.
"""
import argparse, json, os, select, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

SHMEM_THP = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
QEMU_7_2_REFERENCE = {"unit": "GB/s", "source": "machine baseline", "random": 1.69, "zero": 8.5, "none": 1.64}
TARGETS = {"unit": "GB/s, at least", "random": 4, "zero": 16, "none": 100}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def read_line(proc, deadline):
    """One line from proc's (binary, unbuffered) stdout, or None on EOF or at the deadline."""
    fd, buf = proc.stdout.fileno(), b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        b = os.read(fd, 1)
        if not b:
            return buf.decode() or None
        buf += b
    return buf.decode()


def kill(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def qmp(ferry, sock, *cmd, timeout=60):
    """One QMP command through `ferry qmp`; the reply as JSON (or None)."""
    r = subprocess.run([ferry, "qmp", "--qmp", sock, *cmd], capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def rss_anon(pid):
    """A process's anonymous resident memory (bytes), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemSampler:
    """Samples the RssAnon of some processes every 10 ms: the baseline at start, then the peak."""

    def __init__(self, pids):
        import threading
        self.pids, self.base = pids, [rss_anon(p) for p in pids]
        self.peak, self.done = list(self.base), threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done.wait(0.01):
            self.peak = [max(pk, rss_anon(p)) for pk, p in zip(self.peak, self.pids)]

    def stop(self):
        """[(peak, growth)] per process."""
        self.done.set()
        self.t.join()
        return [(pk, pk - b) for pk, b in zip(self.peak, self.base)]


def one(ferry, mem, fill, dst_extra, timeout, sample_mem=False):
    """Both hosts are driven through QMP: `ferry migrate` on the source, `ferry qmp` to check and quit.
    sample_mem: also return the growth of [source, destination] anonymous memory during the migration."""
    spec = f"mem={mem},vram=0,vcpus=2,paused,fill={fill}"
    procs = []
    tmp = tempfile.mkdtemp(prefix="ferry-precopy.")
    dsock, ssock = os.path.join(tmp, "dst.qmp"), os.path.join(tmp, "src.qmp")
    try:
        for attempt in range(3):  # a fresh port per run; retry if someone took it meanwhile
            uri = f"tcp:127.0.0.1:{free_port()}"
            t0 = time.monotonic()
            dst = subprocess.Popen([ferry, "host", "--guest", spec + dst_extra, "--incoming", uri,
                                    "--qmp", "unix:" + dsock, "--json"], stdout=subprocess.PIPE, bufsize=0)
            procs.append(dst)
            line = read_line(dst, t0 + timeout)
            startup = time.monotonic() - t0
            if line and "listening" in line:
                break
            kill([dst])
            if line is None and dst.poll() is None:
                raise RuntimeError(f"destination not listening after {timeout} s")
        else:
            raise RuntimeError(f"destination did not start: {line!r}")
        src = subprocess.Popen([ferry, "host", "--guest", spec, "--qmp", "unix:" + ssock, "--json"],
                               stdout=subprocess.PIPE, bufsize=0)
        procs.append(src)
        line = read_line(src, time.monotonic() + timeout)
        if not line or "listening" not in line:
            raise RuntimeError(f"source did not start: {line!r}")
        sampler = MemSampler([src.pid, dst.pid]) if sample_mem else None
        try:
            m = subprocess.run([ferry, "migrate", "--qmp", ssock, uri, "--json"], capture_output=True, text=True,
                               timeout=timeout)
        finally:
            grown = sampler.stop() if sampler else None
        lines = m.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"ferry migrate printed nothing (exit {m.returncode}): {m.stderr[-300:]}")
        res = json.loads(lines[-1])
        if res["status"] != "completed":
            raise RuntimeError(f"migration failed: {res}")
        deadline = time.monotonic() + timeout
        while True:  # the destination reports completion a moment after the source
            d = qmp(ferry, dsock, "query-migrate")
            st = d and d.get("return", {}).get("status")
            if st == "completed":
                break
            if d is None or "x-previous" in d.get("return", {}) or time.monotonic() > deadline:
                raise RuntimeError(f"destination did not complete: {d}")
            time.sleep(0.01)
        for sock, p in ((ssock, src), (dsock, dst)):
            qmp(ferry, sock, "quit")
            if p.wait(timeout=timeout) != 0:
                raise RuntimeError(f"host exited with {p.returncode}")
        return (res, startup, grown) if sample_mem else (res, startup)
    finally:
        kill(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def run_mode(a, size, dst_extra):
    cases = {}
    for fill in a.fills.split(","):
        runs = []
        for _ in range(a.runs):
            try:
                r, startup = one(a.ferry, a.mem, fill, dst_extra, a.timeout)[:2]
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                print(f"precopy.py: {fill}: {e}", file=sys.stderr)
                runs.append({"error": str(e)})
                continue
            t = max(r["total-time"], 1) / 1000.0
            runs.append({"gbps": round(size / t / 1e9, 3), "total_ms": r["total-time"],
                         "downtime_ms": r["downtime"], "dest_startup_ms": round(startup * 1000, 1),
                         "transferred": r["ram"]["transferred"], "normal": r["ram"]["normal"],
                         "zero": r["ram"]["duplicate"], "skipped": r["ram"]["x-skipped"]})
        ok = [x for x in runs if "error" not in x]
        if not ok:
            cases[fill] = {"error": "every run failed", "runs": runs}
            continue
        g = [x["gbps"] for x in ok]
        cases[fill] = {"gbps_median": round(statistics.median(g), 2), "gbps_min": round(min(g), 2),
                       "gbps_max": round(max(g), 2),
                       "downtime_ms_median": statistics.median(x["downtime_ms"] for x in ok),
                       "dest_startup_ms_median": round(statistics.median(x["dest_startup_ms"] for x in ok), 1),
                       "runs": runs}
    return cases


def grid_cell(ferry, mem, rate, bw, limit, timeout, channels=0, fill=None):
    """One migration of the grid; its figures, or {"switched": False} when it did not converge.
    channels: multifd with that many channels (0: the main connection alone)."""
    spec = f"mem={mem},vram=0,vcpus=2," + (f"fill={fill}," if fill else "") + \
        ("workload=idle" if rate == "idle" else f"workload=random,rate={rate}")
    tmp = tempfile.mkdtemp(prefix="ferry-grid.")
    procs = []
    try:
        uri = "unix:" + os.path.join(tmp, "mig.sock")
        socks = [os.path.join(tmp, n + ".qmp") for n in ("dst", "src")]
        for sock, extra in ((socks[0], ["--incoming", uri]), (socks[1], [])):
            p = subprocess.Popen([ferry, "host", "--guest", spec, "--qmp", "unix:" + sock, "--json", *extra],
                                 stdout=subprocess.PIPE, bufsize=0)
            procs.append(p)
            line = read_line(p, time.monotonic() + 60)
            if not line or "listening" not in line:
                raise RuntimeError(f"host did not start: {line!r}")
        sets = ["--set", f"downtime-limit={limit}"] + (["--set", f"max-bandwidth={bw}"] if bw != "0" else [])
        if channels:
            sets += ["--cap", "multifd=on", "--set", f"multifd-channels={channels}"]
        m = subprocess.run([ferry, "migrate", "--qmp", socks[1], uri, "--json", "--timeout", str(timeout), *sets],
                           capture_output=True, text=True, timeout=timeout + 60)
        lines = m.stdout.strip().splitlines()
        res = json.loads(lines[-1]) if lines else {}
        if res.get("status") != "completed":
            return {"switched": False, "status": res.get("status", f"exit {m.returncode}"),
                    "passes": res.get("ram", {}).get("dirty-sync-count")}
        split = res["x-downtime-split"]
        exp, act = split["expected"], res["downtime"]
        # Microseconds where this build gives them (older ones: whole ms).
        exp_us, act_us = split.get("expected-us", exp * 1000), split.get("downtime-us", act * 1000)
        return {"switched": True, "downtime_ms": act, "expected_ms": exp,
                "downtime_us": act_us, "expected_us": exp_us,
                "expected_over_actual": round(exp_us / act_us, 2) if act_us else None,
                "within_limit": act_us <= limit * 1000, "passes": res["ram"]["dirty-sync-count"],
                "split": {k: v for k, v in split.items() if not k.startswith("expected") and k != "downtime-us"}}
    finally:
        for sock in ([os.path.join(tmp, "src.qmp"), os.path.join(tmp, "dst.qmp")]):
            if os.path.exists(sock):
                qmp(ferry, sock, "quit", timeout=10)
        kill(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def run_grid(a):
    cells = []
    for rate in a.rates.split(","):
        for bw in a.bandwidths.split(","):
            for limit in (int(x) for x in a.limits.split(",")):
                time.sleep(a.settle)
                try:
                    c = grid_cell(a.ferry, a.mem, rate, bw, limit, a.grid_timeout, a.grid_channels,
                                  a.grid_fill)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                    c = {"error": str(e)}
                c.update({"rate_per_vcpu": rate, "max_bandwidth": bw, "downtime_limit_ms": limit})
                print(f"precopy.py: grid {rate} {bw} {limit}: {c}", file=sys.stderr)
                cells.append(c)
    sw = [c for c in cells if c.get("switched")]
    # A downtime under 1 ms (an idle guest's) has no estimate to judge.
    close = [c for c in sw if c["downtime_ms"] and abs(c["expected_us"] - c["downtime_us"]) <= 0.2 * c["downtime_us"]]
    return {"benchmark": "precopy-downtime-grid", "mem": a.mem, "vcpus": 2, "destination": "cold",
            "multifd_channels": a.grid_channels, "fill": a.grid_fill or "default",
            "cells": cells,
            "verdict": {"switched_over": len(sw), "of": len(cells),
                        "within_limit": sum(c["within_limit"] for c in sw),
                        "estimate_within_20pct": len(close),
                        "estimates_judged": sum(1 for c in sw if c["downtime_ms"]),
                        "target": "every switchover within its limit, every estimate within 20%"}}


def parse_size(m):
    return {"G": 1 << 30, "M": 1 << 20}[m[-1]] * int(m[:-1])


def bare_one(bare, mem, timeout):
    """One run of the bare program (1 stream, preallocated destination): its figures, with ms per GiB of
    its better variant."""
    r = subprocess.run([bare, "--mem", mem, "--streams", "1"], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench-bare-copy exited {r.returncode}: {r.stderr[-300:]}")
    j = json.loads(r.stdout.strip().splitlines()[-1])
    best = max(("direct", "bounce"), key=lambda v: j[v]["gbps"])
    return {"ms_per_gib": round(1000 * (1 << 30) / (j["best_gbps"] * 1e9), 1), "best": best,
            "best_gbps": j["best_gbps"], "direct_gbps": j["direct"]["gbps"], "bounce_gbps": j["bounce"]["gbps"],
            "cpu_s_per_gib": j[best]["cpu_s_per_gib"]}


def run_scale(a):
    """How cost grows: the sizes interleaved, order alternated, settled between runs; the bare program
    beside Ferry at each size (unless --no-bare)."""
    sizes = a.scale.split(",")
    runs = {m: [] for m in sizes}
    bare = {m: [] for m in sizes}
    for r in range(a.runs):
        for m in (sizes if r % 2 == 0 else sizes[::-1]):
            for what in ((["ferry", "bare"] if r % 2 == 0 else ["bare", "ferry"]) if not a.no_bare else ["ferry"]):
                time.sleep(a.settle)
                if what == "bare":
                    try:
                        b = bare_one(a.bare, m, a.timeout)
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError) as e:
                        print(f"precopy.py: scale {m} bare: {e}", file=sys.stderr)
                        b = {"error": str(e)}
                    bare[m].append(b)
                    print(f"precopy.py: scale {m} bare: {b}", file=sys.stderr)
                    continue
                try:
                    res, startup, grown = one(a.ferry, m, "random", ",prealloc", a.timeout, sample_mem=True)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                    print(f"precopy.py: scale {m}: {e}", file=sys.stderr)
                    runs[m].append({"error": str(e)})
                    continue
                gib = parse_size(m) / (1 << 30)
                runs[m].append({"total_ms": res["total-time"], "setup_ms": res["setup-time"],
                                "ms_per_gib": round(res["total-time"] / gib, 1), "downtime_ms": res["downtime"],
                                "src_anon_peak": grown[0][0], "dst_anon_peak": grown[1][0],
                                "src_anon_growth": grown[0][1], "dst_anon_growth": grown[1][1],
                                "src_mem_per_gib": int(grown[0][0] / gib),
                                "dst_mem_per_gib": int(grown[1][0] / gib)})
                print(f"precopy.py: scale {m} ferry: {runs[m][-1]['ms_per_gib']} ms/GiB", file=sys.stderr)
    out = {}
    for m, rs in runs.items():
        ok = [x for x in rs if "error" not in x]
        if not ok:
            out[m] = {"error": "every run failed", "runs": rs}
            continue
        med = lambda k: statistics.median(x[k] for x in ok)
        out[m] = {"ms_per_gib_median": round(med("ms_per_gib"), 1), "setup_ms_median": med("setup_ms"),
                  "src_mem_per_gib_median": int(med("src_mem_per_gib")),
                  "dst_mem_per_gib_median": int(med("dst_mem_per_gib")), "runs": rs}
        bok = [x for x in bare[m] if "error" not in x]
        if bok:
            bm = round(statistics.median(x["ms_per_gib"] for x in bok), 1)
            out[m]["bare"] = {"ms_per_gib_median": bm, "runs": bare[m]}
            out[m]["ferry_over_bare"] = round(out[m]["ms_per_gib_median"] / bm, 3)
        elif bare[m]:
            out[m]["bare"] = {"error": "every run failed", "runs": bare[m]}
    per_gib = [v["ms_per_gib_median"] for v in out.values() if "error" not in v]
    setup = [v["setup_ms_median"] for v in out.values() if "error" not in v]
    bare_per_gib = [v["bare"]["ms_per_gib_median"] for v in out.values()
                    if "error" not in v and "ms_per_gib_median" in v.get("bare", {})]
    ratios = {}
    if per_gib:
        ratios = {"time_per_gib_max_over_min": round(max(per_gib) / min(per_gib), 3),
                  "time_per_gib_target": "<= 1.10",
                  "setup_ms_min_max": [min(setup), max(setup)]}
    if bare_per_gib:
        ratios["bare_time_per_gib_max_over_min"] = round(max(bare_per_gib) / min(bare_per_gib), 3)
        ratios["ms_per_gib_ferry_vs_bare"] = {m: [v["ms_per_gib_median"], v["bare"]["ms_per_gib_median"]]
                                              for m, v in out.items() if "ferry_over_bare" in v}
    return {"benchmark": "precopy-scale", "fill": "random", "destination": "prealloc", "channels": 1,
            "transport": "tcp loopback", "runs_per_size": a.runs, "settle_s": a.settle,
            "bare": None if a.no_bare else {"program": "bench-bare-copy", "streams": 1,
                                            "destination": "preallocated, written once from user space",
                                            "ms_per_gib": "1000 * 2^30 / (best_gbps * 1e9), better variant"},
            "sizes": out, "ratios": ratios}


def thp_skip_reason():
    if not os.path.exists(SHMEM_THP):
        return f"{SHMEM_THP} does not exist"
    if os.geteuid() != 0:
        return f"needs root to write {SHMEM_THP}"
    return None


def shmem_thp_value():
    with open(SHMEM_THP) as f:
        v = f.read()
    return v[v.index("[") + 1:v.index("]")] if "[" in v else v.strip()


def set_shmem_thp(v):
    with open(SHMEM_THP, "w") as f:
        f.write(v)


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default=os.path.join(os.path.dirname(__file__), "..", "build", "ferry"))
    ap.add_argument("--mem", default="2G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fills", default="random,zero,none")
    ap.add_argument("--dest-modes", default="default,prealloc,thp")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for each process wait")
    ap.add_argument("--scale", help="sizes (1G,2G,4G,8G): how cost grows with the guest, see above")
    ap.add_argument("--no-bare", action="store_true", help="--scale: leave the bare program out")
    ap.add_argument("--bare", default=os.path.join(os.path.dirname(__file__), "..", "build", "bench",
                                                   "bench-bare-copy"), help="--scale: the bare program")
    ap.add_argument("--settle", type=float, default=5, help="--scale, --downtime-grid: seconds between runs")
    ap.add_argument("--downtime-grid", action="store_true", help="downtime versus its limit, see above")
    ap.add_argument("--rates", default="idle,50M,200M,400M")
    ap.add_argument("--bandwidths", default="0,1G,200M")
    ap.add_argument("--limits", default="50,300")
    ap.add_argument("--grid-timeout", type=int, default=30)
    ap.add_argument("--grid-channels", type=int, default=0, help="--downtime-grid: multifd with N channels")
    ap.add_argument("--grid-fill", default=None, help="--downtime-grid: the guests' fill= (none: populated as they run)")
    a = ap.parse_args()
    if a.downtime_grid:
        if a.mem == "2G":
            a.mem = "512M"
        print(json.dumps(run_grid(a), indent=1))
        return
    if a.scale:
        print(json.dumps(run_scale(a), indent=1))
        return
    size = parse_size(a.mem)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every finally (process kills, THP restore) runs.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    out = {"benchmark": "precopy-paused", "mem_bytes": size, "channels": 1, "transport": "tcp loopback",
           "modes": {}}
    for mode in a.dest_modes.split(","):
        if mode == "default":
            out["modes"][mode] = run_mode(a, size, "")
        elif mode == "prealloc":
            out["modes"][mode] = run_mode(a, size, ",prealloc")
        elif mode == "thp":
            why = thp_skip_reason()
            if why:
                out["modes"][mode] = {"skipped": why}
                continue
            saved = shmem_thp_value()
            try:
                set_shmem_thp("advise")
                out["modes"][mode] = run_mode(a, size, "")
            finally:
                # No signal may interrupt the restore.
                old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
                set_shmem_thp(saved)
                for s, h in old.items():
                    signal.signal(s, h)
            out["shmem_enabled"] = {"saved": saved, "during_thp_mode": "advise", "restored": shmem_thp_value()}
        else:
            raise SystemExit(f"unknown destination mode '{mode}' (default, prealloc, thp)")
    out["qemu_7_2_reference"] = QEMU_7_2_REFERENCE
    out["targets"] = TARGETS
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
