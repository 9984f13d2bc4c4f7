#!/usr/bin/env python3
"""Postcopy benchmark: a 1 GiB guest running the random workload unthrottled on 2 vCPUs,
switched to postcopy after one precopy pass, over TCP loopback, with and without the
postcopy-preempt channel, and with it plus the fault-path threads of both sides pinned to CPU 0
(`preempt-pinned`: `--set x-postcopy-cpu=0`, so a page request's three wakeups are local ones). Each run is `ferry demo --postcopy [--preempt] --json` (two `ferry host`
processes driven over QMP; the destination's RAM is verified against the never-migrated twin).

Reports per mode the medians over the runs of: fault latency p50/p99/max (destination: from the
fault thread reading the fault to the page being placed), page requests, vCPU blocked time,
total migration time and downtime (source stop to destination running), background throughput
after the switch (postcopy bytes over the time from the switch to completion), the CPU seconds
per GB of them that the destination's background loader (mig/dst/listen) took, plus every run
with each migration thread's CPU time (the hosts run with FERRY_LOG=debug for their "thread
done" lines).
With --base OTHER_FERRY (e.g. a build of main), every run of each mode is alternated with one of
OTHER_FERRY (order alternating, a few seconds' settle between runs) and the JSON gets its medians
too and the ratios (ours / base). Targets (issue 20): without preempt p50 <= 1 ms, p99 <= 5 ms and
background throughput >= 90% of the base's; with preempt p50 <= 50 us, p99 <= 500 us.

The limit: once per round (a round is one run of each mode, in order), before Ferry's runs, the
bare program bench-bare-fault (--bare PATH, default build/bench/bench-bare-fault; --no-bare to
skip) measures the least a page fault costs on this machine, with nothing a migration adds: a
page requested on a connection of its own (idle), the same beside a full-speed background stream
(busy: preempt's limit), and queued behind the stream on one connection (shared: plain's limit).
The JSON's "limit" has the bare medians per variant, its runs, and per mode the ratios of Ferry's
p50/p99 to the target and to the bare (preempt modes: bare idle and busy; plain: bare shared), and
whether the bare itself meets each target (if not, the target is beyond this machine). With mode
preempt-pinned, each round also runs the bare with its fault path on CPU 0 (--pin 0, idle and busy:
"median_pinned"), the limit preempt-pinned is compared with. The bare's background goes at full
speed, a heavier load than Ferry's postcopy background may be; so after each run of a preempt mode
the bare's busy runs again with its background paced to that run's background_MBps (--bg-mbps, and
--pin 0 for preempt-pinned): "busy_paced" per mode, Ferry's figures against the limit at Ferry's own
background rate. --bare-args passes more arguments to every bare run.
Prints one JSON object. Usage:
  bench/postcopy.py [--ferry build/ferry] [--base OTHER] [--mem 1G] [--runs 3]
                    [--modes plain,preempt,preempt-pinned]
                    [--bare build/bench/bench-bare-fault [--bare-args '--bg-mbps 120'] | --no-bare]
"""
import argparse, json, os, re, statistics, subprocess, sys, time

TARGETS = {"preempt_p50_us": 50, "preempt_p99_us": 500, "downtime_ms": 20,
           "plain_p50_us": 1000, "plain_p99_us": 5000, "plain_background_vs_base": 0.9}
KEYS = ("latency_p50_us", "latency_p99_us", "latency_max_us", "requests", "vcpu_blocked_ms",
        "total_time_ms", "downtime_ms", "background_MBps", "listen_cpu_s_per_GB")
# FERRY_LOG=debug: each migration thread's CPU time at its end ("thread done" lines on stderr)
THREAD_CPU_RE = re.compile(r"^ferry\[(mig/[^\]]+)\] debug: thread done: ([0-9.]+) ms of CPU")
SETTLE_S = 3
QEMU_REFERENCE = {"preempt_avg_us": 229, "source": "QEMU docs (100G link, postcopy-preempt)"}
BARE_VARIANTS = ("idle", "busy", "shared")
BARE_KEYS = ("p50_us", "p99_us", "max_us", "vcpu_p50_us", "vcpu_p99_us", "background_MBps")
BARE_FOR = {"plain": "shared", "preempt": "busy", "preempt-pinned": "busy"}  # the limit of each mode


def run(ferry, mem, mode):
    cmd = [ferry, "demo", "--mem", mem, "--vcpus", "2", "--workload", "random", "--rate", "max",
           "--postcopy", "--json"]
    if mode != "plain":
        cmd.append("--preempt")
    if mode == "preempt-pinned":
        cmd += ["--set", "x-postcopy-cpu=0"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, FERRY_LOG="debug"))
    cpu = {}
    for line in p.stderr.splitlines():
        m = THREAD_CPU_RE.match(line)
        if m:  # per thread name; placers and channels of one kind add up
            cpu[m.group(1)] = round(cpu.get(m.group(1), 0) + float(m.group(2)), 1)
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
        # mig/dst/listen runs only after the switch: the background's cost per byte there
        "listen_cpu_s_per_GB": round(cpu["mig/dst/listen"] / 1e3 / (d["postcopy_bytes"] / 1e9), 3)
        if cpu.get("mig/dst/listen") and d.get("postcopy_bytes") else None,
        "thread_cpu_ms": cpu,
    }


def run_bare(bare, args):
    """One run of bench-bare-fault (all variants): its JSON, or {"error": ...}."""
    p = subprocess.run([bare] + args, capture_output=True, text=True, timeout=600)
    if p.returncode:
        return {"error": p.stderr.strip() or f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def bare_medians(runs):
    good = [r for r in runs if "error" not in r]
    med = {}
    for v in BARE_VARIANTS:
        vals = {k: [r[v][k] for r in good if k in r.get(v, {})] for k in BARE_KEYS}
        if any(vals.values()):
            med[v] = {k: statistics.median(x) for k, x in vals.items() if x}
    return med, len(good) == len(runs)


def limit(out, bare, args, runs, pinned, paced):
    """The "limit" section: the bare medians and Ferry's figures against them and the targets."""
    med, good = bare_medians(runs)
    pmed, pgood = bare_medians(pinned)
    lim = {"bare": bare, "args": args, "median": med, "ratios": {}, "bare_meets_target": {}, "runs": runs}
    if pinned:
        lim.update(median_pinned=pmed, runs_pinned=pinned)
    for mode, m in out["modes"].items():
        kind = "plain" if mode == "plain" else "preempt"
        ours, var = m["median"], BARE_FOR[mode]
        bm = pmed if mode == "preempt-pinned" else med
        r = {f"{q}_vs_target": ratio(ours[f"latency_{q}_us"], TARGETS[f"{kind}_{q}_us"]) for q in ("p50", "p99")}
        for v in ("idle", var) if kind == "preempt" else (var,):
            r.update({f"{q}_vs_bare_{v}": ratio(ours[f"latency_{q}_us"], bm.get(v, {}).get(f"{q}_us"))
                      for q in ("p50", "p99")})
        pm, pgood_m = bare_medians(paced.get(mode, []))
        pgood = pgood and pgood_m
        if "busy" in pm:
            lim.setdefault("busy_paced", {})[mode] = {"median": pm["busy"], "runs": paced[mode]}
            r.update({f"{q}_vs_bare_busy_paced": ratio(ours[f"latency_{q}_us"], pm["busy"].get(f"{q}_us"))
                      for q in ("p50", "p99")})
        lim["ratios"][mode] = r
        b = bm.get(var, {})
        lim["bare_meets_target"][mode] = {
            f"{kind}_{q}_us": None if b.get(f"{q}_us") is None else b[f"{q}_us"] <= TARGETS[f"{kind}_{q}_us"]
            for q in ("p50", "p99")} | {"bare_variant": var + (" pinned" if bm is pmed else "")}
    out["limit"] = lim
    return good and pgood


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
    ap.add_argument("--bare", default="build/bench/bench-bare-fault",
                    help="the bare program, run once per round (the limit)")
    ap.add_argument("--no-bare", action="store_true", help="no bare runs")
    ap.add_argument("--bare-args", default="", help="more arguments for the bare, e.g. '--bg-mbps 120'")
    a = ap.parse_args()
    modes = a.modes.split(",")
    for mode in modes:
        if mode not in ("plain", "preempt", "preempt-pinned"):
            ap.error(f"unknown mode {mode!r}")
    if not a.no_bare and not os.access(a.bare, os.X_OK):
        ap.error(f"no bare program {a.bare!r} (build it with ninja -C build, or --no-bare)")
    settle = a.base or not a.no_bare
    out = {"bench": "postcopy", "mem": a.mem, "vcpus": 2, "workload": "random, unthrottled",
           "switch": "after one pass", "link": "tcp loopback", "targets": TARGETS,
           "qemu_reference": QEMU_REFERENCE, "modes": {}}
    ok = True
    runs = {mode: [] for mode in modes}
    base = {mode: [] for mode in modes}
    bare, pinned, paced = [], [], {mode: [] for mode in modes}
    for i in range(a.runs):
        if not a.no_bare:
            time.sleep(SETTLE_S)
            bare.append(run_bare(a.bare, a.bare_args.split()))
            if "preempt-pinned" in modes:
                time.sleep(SETTLE_S)
                pinned.append(run_bare(a.bare, a.bare_args.split() + ["--pin", "0", "--variants", "idle,busy"]))
        for mode in modes:
            order = [(a.ferry, runs[mode]), (a.base, base[mode])] if a.base else [(a.ferry, runs[mode])]
            for exe, into in (order if i % 2 == 0 else order[::-1]):
                if settle:
                    time.sleep(SETTLE_S)
                into.append(run(exe, a.mem, mode))
            bg = runs[mode][-1]["background_MBps"]
            if not a.no_bare and mode != "plain" and bg:
                time.sleep(SETTLE_S)
                pin = ["--pin", "0"] if mode == "preempt-pinned" else []
                paced[mode].append(run_bare(a.bare, a.bare_args.split() + pin +
                                            ["--variants", "busy", "--bg-mbps", str(round(bg))]))
    for mode in modes:
        runs_m, base_m = runs[mode], base[mode]
        med, good = medians(runs_m)
        ok = ok and good
        out["modes"][mode] = {"median": med, "runs": runs_m}
        if a.base:
            bmed, _ = medians(base_m)
            out["modes"][mode]["base"] = {"ferry": a.base, "median": bmed, "runs": base_m}
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
    if not a.no_bare:
        ok = limit(out, a.bare, a.bare_args, bare, pinned, paced) and ok
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
