#!/usr/bin/env python3
"""Postcopy benchmark: a 1 GiB guest running the random workload unthrottled on 2 vCPUs,
switched to postcopy after one precopy pass, over TCP loopback, with and without the
postcopy-preempt channel, and with it plus the fault-path threads of both sides pinned to CPU 0
(`preempt-pinned`: `--set x-postcopy-cpu=0`, so a page request's three wakeups are local ones). Each run is `ferry demo --postcopy [--preempt] --json` (two `ferry host`
processes driven over QMP; the destination's RAM is verified against the never-migrated twin).

Reports per mode the medians over the runs of: fault latency p50/p99/max (destination: from the
fault thread reading the fault to the page being placed), page requests, vCPU blocked time,
total migration time and downtime (source stop to destination running), plus every run.
Prints one JSON object. Usage:
  bench/postcopy.py [--ferry build/ferry] [--mem 1G] [--runs 3] [--modes plain,preempt,preempt-pinned]
"""
import argparse, json, statistics, subprocess, sys

TARGETS = {"preempt_p50_us": 50, "preempt_p99_us": 500, "downtime_ms": 20}
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
    return {
        "status": d.get("status"), "verified": d.get("verified"),
        "total_time_ms": d.get("total_time_ms"), "downtime_ms": d.get("downtime_ms"),
        "requests": pc.get("requests"), "faults": pc.get("faults"),
        "latency_p50_us": lat.get("p50-us"), "latency_p99_us": lat.get("p99-us"),
        "latency_max_us": lat.get("max-us"), "vcpu_blocked_ms": pc.get("blocktime-ms"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="build/ferry")
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="plain,preempt,preempt-pinned")
    a = ap.parse_args()
    out = {"bench": "postcopy", "mem": a.mem, "vcpus": 2, "workload": "random, unthrottled",
           "switch": "after one pass", "link": "tcp loopback", "targets": TARGETS,
           "qemu_reference": QEMU_REFERENCE, "modes": {}}
    ok = True
    for mode in a.modes.split(","):
        if mode not in ("plain", "preempt", "preempt-pinned"):
            ap.error(f"unknown mode {mode!r}")
        runs = [run(a.ferry, a.mem, mode) for _ in range(a.runs)]
        good = [r for r in runs if r["status"] == "completed" and r["verified"]]
        ok = ok and len(good) == len(runs)
        med = {}
        for k in ("latency_p50_us", "latency_p99_us", "latency_max_us", "requests",
                  "vcpu_blocked_ms", "total_time_ms", "downtime_ms"):
            vals = [r[k] for r in good if r[k] is not None]
            med[k] = statistics.median(vals) if vals else None
        out["modes"][mode] = {"median": med, "runs": runs}
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
