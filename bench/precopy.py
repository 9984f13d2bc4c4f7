#!/usr/bin/env python3
"""Precopy benchmark: migrate a paused guest over loopback, one channel.

For each fill (random, zero = populated zero pages, none = never touched) it starts a
destination and a source `ferry host` process, migrates, and reports GB/s (guest RAM size /
total migration time) and downtime. Prints one JSON object. Usage:
  bench/precopy.py [--ferry build/ferry] [--mem 2G] [--runs 3] [--fills random,zero,none]
"""
import argparse, json, os, socket, statistics, subprocess, sys, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def one(ferry, mem, fill, extra):
    spec = f"mem={mem},vram=0,vcpus=2,paused,fill={fill}"
    uri = f"tcp:127.0.0.1:{free_port()}"
    dst = subprocess.Popen([ferry, "host", "--guest", spec, "--incoming", uri, "--json"] + extra,
                           stdout=subprocess.PIPE, text=True)
    line = dst.stdout.readline()
    assert "listening" in line, line
    src = subprocess.run([ferry, "host", "--guest", spec, "--migrate", uri, "--json"],
                         stdout=subprocess.PIPE, text=True, check=False)
    dst.wait(timeout=600)
    res = json.loads(src.stdout.strip().splitlines()[-1])["migration"]
    if res["status"] != "completed":
        raise SystemExit(f"migration failed: {res}")
    return res

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default=os.path.join(os.path.dirname(__file__), "..", "build", "ferry"))
    ap.add_argument("--mem", default="2G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fills", default="random,zero,none")
    a = ap.parse_args()
    size = {"G": 1 << 30, "M": 1 << 20}[a.mem[-1]] * int(a.mem[:-1])
    out = {"benchmark": "precopy-paused", "mem_bytes": size, "channels": 1, "transport": "tcp loopback",
           "cases": {}}
    for fill in a.fills.split(","):
        runs = []
        for _ in range(a.runs):
            r = one(a.ferry, a.mem, fill, [])
            t = max(r["total-time"], 1) / 1000.0
            runs.append({"gbps": size / t / 1e9, "total_ms": r["total-time"], "downtime_ms": r["downtime"],
                         "transferred": r["ram"]["transferred"], "normal": r["ram"]["normal"],
                         "zero": r["ram"]["duplicate"], "skipped": r["ram"]["skipped"]})
        g = [x["gbps"] for x in runs]
        out["cases"][fill] = {"gbps_median": round(statistics.median(g), 2), "gbps_min": round(min(g), 2),
                              "gbps_max": round(max(g), 2),
                              "downtime_ms_median": statistics.median(x["downtime_ms"] for x in runs),
                              "runs": runs}
    print(json.dumps(out, indent=1))

if __name__ == "__main__":
    main()
