#!/usr/bin/env python3
"""Auto-converge benchmark: a guest that dirties RAM twice as fast as the link sends it.

A 256 MiB guest whose 2 vCPUs write random pages at 100 MB/s each, over a 100 MiB/s
`max-bandwidth` with a 50 ms `downtime-limit`: without auto-converge it never switches over
(tests/integration/test-migrate.c t_no_convergence_then_cancel shows the stall). For each
throttle setting below it runs `ferry demo --json` (two `ferry host` processes, QMP, the
destination verified bit for bit against the never-migrated twin) and reports the median total
time, passes, downtime and the highest throttle reached. Prints one JSON object. Usage:
  bench/autoconverge.py [--ferry build/ferry] [--runs 3]

Settings (QEMU's parameter names):
  defaults   cpu-throttle-initial 20, cpu-throttle-increment 10 (QEMU's defaults)
  tailslow   the same with cpu-throttle-tailslow (smaller steps near the threshold)
  steep      cpu-throttle-initial 50, cpu-throttle-increment 25
A raise needs two periods of at least 1 s each that dirtied more than half of what was sent
(throttle-trigger-threshold 50), so the time to converge is about 2 s per raise.
"""
import argparse, json, statistics, subprocess, sys

BASE = ["--mem", "256M", "--rate", "100M", "--set", "max-bandwidth=104857600",
        "--set", "downtime-limit=50"]
SETTINGS = {
    "defaults": [],
    "tailslow": ["--set", "cpu-throttle-tailslow=true"],
    "steep": ["--set", "cpu-throttle-initial=50", "--set", "cpu-throttle-increment=25"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="build/ferry")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    out = {"benchmark": "autoconverge",
           "guest": "mem=256M, 2 vCPUs, random writes at 100 MB/s each",
           "link": "tcp loopback, max-bandwidth 100 MiB/s, downtime-limit 50 ms",
           "rows": {}}
    ok = True
    for name, extra in SETTINGS.items():
        runs = []
        for _ in range(a.runs):
            p = subprocess.run([a.ferry, "demo", "--json", *BASE, *extra], capture_output=True,
                               text=True, timeout=600)
            try:
                j = json.loads(p.stdout)
            except ValueError:
                j = {"status": "failed", "stderr": p.stderr[-500:]}
            runs.append(j)
            print(f"autoconverge: {name}: {j.get('status')} in {j.get('total_time_ms')} ms, "
                  f"{j.get('passes')} passes, throttle peak {j.get('cpu_throttle_peak')}%, "
                  f"verified {j.get('verified')}", file=sys.stderr)
        good = [r for r in runs if r.get("status") == "completed" and r.get("verified")]
        ok = ok and len(good) == len(runs)
        med = lambda k: statistics.median(r[k] for r in good) if good else None
        out["rows"][name] = {"completed_and_verified": f"{len(good)}/{len(runs)}",
                             "total_time_ms": med("total_time_ms"), "passes": med("passes"),
                             "downtime_ms": med("downtime_ms"),
                             "cpu_throttle_peak": med("cpu_throttle_peak"),
                             "runs": [{k: r.get(k) for k in ("total_time_ms", "passes", "downtime_ms",
                                                             "cpu_throttle_peak", "verified")}
                                      for r in runs]}
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
