#!/usr/bin/env python3
"""Postcopy benchmark: a 1 GiB guest running the random workload unthrottled on 2 vCPUs,
switched to postcopy after one precopy pass, over TCP loopback, with and without the
postcopy-preempt channel, and with it plus the fault-path threads of both sides pinned to CPU 0
(`preempt-pinned`: `--set x-postcopy-cpu=0`, so a page request's three wakeups are local ones). Each run is `ferry demo --postcopy [--preempt] --json` (two `ferry host`
processes driven over QMP; the destination's RAM is verified against the never-migrated twin).

Reports per mode the medians over the runs of: fault latency p50/p99/max (destination: from the
fault thread reading the fault to the page being placed), page requests, vCPU blocked time,
total migration time and downtime (source stop to destination running), background throughput
after the switch (postcopy bytes over the time from the switch to completion), plus every run.
With --base OTHER_FERRY (e.g. a build of main), every run of each mode is alternated with one of
OTHER_FERRY (order alternating, a few seconds' settle between runs) and the JSON gets its medians
too and the ratios (ours / base). Targets (issue 20): without preempt p50 <= 1 ms, p99 <= 5 ms and
background throughput >= 90% of the base's; with preempt p50 <= 50 us, p99 <= 500 us.
Prints one JSON object. Usage:
  bench/postcopy.py [--ferry build/ferry] [--base OTHER] [--mem 1G] [--runs 3] [--modes plain,preempt,preempt-pinned]
"""
import argparse, json, statistics, subprocess, sys, time

TARGETS = {"preempt_p50_us": 50, "preempt_p99_us": 500, "downtime_ms": 20,
           "plain_p50_us": 1000, "plain_p99_us": 5000, "plain_background_vs_base": 0.9}
KEYS = ("latency_p50_us", "latency_p99_us", "latency_max_us", "requests", "vcpu_blocked_ms",
        "total_time_ms", "downtime_ms", "background_MBps")
SETTLE_S = 3
QEMU_REFERENCE = {"preempt_avg_us": 229, "source": "QEMU docs (100G link, postcopy-preempt)"}


def run(ferry, mem, mode):
    cmd = [ferry, "demo", "--mem", mem, "--vcpus", "2", "--workload", "random", "--rate", "max",
           "--postcopy", "--json"]
    if mode != "plain":
        cmd.append("--preempt")
    if mode == "preempt-pinned":
        cmd += ["--set", "x-postcopy-cpu=0"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "{}"
    d = json.loads(line)
    pc = d.get("postcopy", {})
    lat = pc.get("fault-latency", {})
    bg = None
    if d.get("postcopy_bytes") and d.get("postcopy_after_ms") and d.get("total_time_ms"):
        ms = d["total_time_ms"] - d["postcopy_after_ms"]
        bg = round(d["postcopy_bytes"] / 1e6 / (ms / 1e3), 1) if ms > 0 else None
    return {
        "status": d.get("status"), "verified": d.get("verified"),
        "total_time_ms": d.get("total_time_ms"), "downtime_ms": d.get("downtime_ms"),
        "requests": pc.get("requests"), "faults": pc.get("faults"),
        "latency_p50_us": lat.get("p50-us"), "latency_p99_us": lat.get("p99-us"),
        "latency_max_us": lat.get("max-us"), "vcpu_blocked_ms": pc.get("blocktime-ms"),
        "background_MBps": bg, "postcopy_bytes": d.get("postcopy_bytes"),
    }


def medians(runs):
    good = [r for r in runs if r["status"] == "completed" and r["verified"]]
    med = {}
    for k in KEYS:
        vals = [r[k] for r in good if r[k] is not None]
        med[k] = statistics.median(vals) if vals else None
    return med, len(good) == len(runs)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="build/ferry")
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="plain,preempt,preempt-pinned")
    ap.add_argument("--base", help="another ferry binary, run alternately (before/after)")
    a = ap.parse_args()
    out = {"bench": "postcopy", "mem": a.mem, "vcpus": 2, "workload": "random, unthrottled",
           "switch": "after one pass", "link": "tcp loopback", "targets": TARGETS,
           "qemu_reference": QEMU_REFERENCE, "modes": {}}
    ok = True
    for mode in a.modes.split(","):
        if mode not in ("plain", "preempt", "preempt-pinned"):
            ap.error(f"unknown mode {mode!r}")
        runs, base = [], []
        for i in range(a.runs):
            order = [(a.ferry, runs), (a.base, base)] if a.base else [(a.ferry, runs)]
            for exe, into in (order if i % 2 == 0 else order[::-1]):
                if a.base:
                    time.sleep(SETTLE_S)
                into.append(run(exe, a.mem, mode))
        med, good = medians(runs)
        ok = ok and good
        out["modes"][mode] = {"median": med, "runs": runs}
        if a.base:
            bmed, _ = medians(base)
            out["modes"][mode]["base"] = {"ferry": a.base, "median": bmed, "runs": base}
            out["modes"][mode]["ratio_vs_base"] = {k: ratio(med[k], bmed[k]) for k in KEYS}
    plain = out["modes"].get("plain", {})
    if plain:
        med = plain["median"]
        bg = plain.get("ratio_vs_base", {}).get("background_MBps")
        out.setdefault("targets_met", {})["plain"] = {
            "plain_p50_us": med["latency_p50_us"] is not None and med["latency_p50_us"] <= TARGETS["plain_p50_us"],
            "plain_p99_us": med["latency_p99_us"] is not None and med["latency_p99_us"] <= TARGETS["plain_p99_us"],
            "plain_background_vs_base": None if bg is None else bg >= TARGETS["plain_background_vs_base"],
        }
    for mode in ("preempt", "preempt-pinned"):
        pre = out["modes"].get(mode, {}).get("median", {})
        if not pre:
            continue
        out.setdefault("targets_met", {})[mode] = {
            "preempt_p50_us": pre["latency_p50_us"] is not None and pre["latency_p50_us"] <= TARGETS["preempt_p50_us"],
            "preempt_p99_us": pre["latency_p99_us"] is not None and pre["latency_p99_us"] <= TARGETS["preempt_p99_us"],
            "downtime_ms": pre["downtime_ms"] is not None and pre["downtime_ms"] <= TARGETS["downtime_ms"],
        }
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
