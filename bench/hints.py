#!/usr/bin/env python3
"""Free page hints benchmark: an idle guest whose RAM is mostly free (default 8 GiB, 90% free:
the churn workload's free list, pages filled with random bytes before being freed), migrated over
a unix socket with and without free page hints (virtio-balloon free page hint protocol,
parameter x-free-page-hints). Each run starts a destination and a source `ferry host`
(guest spec `workload=churn,alloc=10,rate=4K,balloon`: the vCPUs barely step), migrates with
`ferry migrate --json`, then verifies the destination against its never-migrated twin (free pages
excluded, every allocated page compared).

Reports per mode: total time (ms), bytes transferred, pages skipped by hints, hint commands and
hint wait time; medians over the runs; the time and bytes saved by hints; and whether the targets
hold (time -85% or better, bytes sent <= used RAM + 2%). Prints one JSON object. Usage:
  bench/hints.py [--ferry build/ferry] [--mem 8G] [--alloc 10] [--runs 3]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

QEMU_REFERENCE = {"idle_8g_ms_without": 2970, "idle_8g_ms_with": 620, "saving": 0.79,
                  "source": "QEMU free page hint patches (published figures)"}


def size_bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def wait_sock(path, proc, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def qmp(ferry, sock, *args):
    p = subprocess.run([ferry, "qmp", "--qmp", sock, *args], capture_output=True, text=True, timeout=600)
    return json.loads(p.stdout) if p.stdout.strip() else {}


def one(ferry, mem, alloc, hints):
    tmp = tempfile.mkdtemp(prefix="ferry-hints.")
    spec = f"mem={mem},vram=0,vcpus=2,workload=churn,alloc={alloc},rate=4K,balloon"
    dq, sq, mig = (os.path.join(tmp, n) for n in ("dst.qmp", "src.qmp", "mig.sock"))
    dst = subprocess.Popen([ferry, "host", "--guest", spec, "--qmp", "unix:" + dq, "--incoming",
                            "unix:" + mig], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    src = subprocess.Popen([ferry, "host", "--guest", spec, "--qmp", "unix:" + sq],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not (wait_sock(dq, dst) and wait_sock(sq, src)):
            raise RuntimeError("hosts did not start")
        time.sleep(0.3)
        m = subprocess.run([ferry, "migrate", "--qmp", sq, "unix:" + mig, "--json",
                            "--set", f"x-free-page-hints={'true' if hints else 'false'}"],
                           capture_output=True, text=True, timeout=900)
        info = json.loads(m.stdout.strip().splitlines()[-1])
        # The source's RAM goes before the twin is built: source + destination + twin of an
        # 8 GiB guest would not fit in 24 GiB.
        qmp(ferry, sq, "quit")
        src.wait(timeout=60)
        qmp(ferry, dq, "stop")
        v = qmp(ferry, dq, "query-guest-hash", '{"verify": true}').get("return", {})
        h = info.get("x-free-page-hints", {})
        return {"status": info.get("status"), "verified": v.get("matches-twin"),
                "total_time_ms": info.get("total-time"), "transferred": info["ram"]["transferred"],
                "hint_skipped_pages": h.get("skipped-pages", 0), "hint_commands": h.get("commands", 0),
                "hint_wait_ms": h.get("wait-ms", 0), "pages_compared": v.get("pages-compared")}
    finally:
        for s, p in ((sq, src), (dq, dst)):
            try:
                if p.poll() is None:
                    qmp(ferry, s, "quit")
            except Exception:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", default="build/ferry")
    ap.add_argument("--mem", default="8G")
    ap.add_argument("--alloc", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    out = {"bench": "free-page-hints", "mem": a.mem, "allocated_percent": a.alloc,
           "qemu_reference": QEMU_REFERENCE, "modes": {}}
    for mode in ("without", "with"):
        runs = [one(a.ferry, a.mem, a.alloc, mode == "with") for _ in range(a.runs)]
        ok = [r for r in runs if r["status"] == "completed" and r["verified"]]
        med = {k: statistics.median([r[k] for r in ok]) if ok else None
               for k in ("total_time_ms", "transferred", "hint_skipped_pages", "hint_wait_ms")}
        out["modes"][mode] = {"median": med, "runs": runs, "all_verified": len(ok) == len(runs)}
    w, wo = out["modes"]["with"]["median"], out["modes"]["without"]["median"]
    used = size_bytes(a.mem) * a.alloc // 100
    if w["total_time_ms"] and wo["total_time_ms"]:
        out["time_saving"] = round(1 - w["total_time_ms"] / wo["total_time_ms"], 3)
        out["bytes_saving"] = round(1 - w["transferred"] / wo["transferred"], 3)
        out["bytes_vs_used_ram"] = round(w["transferred"] / used, 3)
        out["targets_met"] = {"time_saving_ge_85pct": out["time_saving"] >= 0.85,
                              "bytes_le_used_plus_2pct": w["transferred"] <= used * 1.02}
    print(json.dumps(out, indent=1))
    ok = all(m["all_verified"] for m in out["modes"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
