"""Capacity search accuracy: the capacity `harness capacity` finds against a server of known capacity.

    .venv/bin/python benchmarks/bench_capacity.py [--probe 3] [--quick] [--sleep-ms 50] [--threads 8]

The figure that used to be a timing assertion in the capacity test (issue 18). The bundled `sleep`
model (each forward sleeps --sleep-ms with the GIL released) under 1 gthread worker x --threads
threads serves at most threads / sleep = 8 / 50 ms = 160 req/s: its known capacity. The search
runs through the CLI as a user would (`python -m harness capacity SCENARIO --out DIR`): constant
open-model arrivals, SLO p99 < 200 ms and error rate < 0.1%, bracketing from 100 req/s and
bisecting to 3%. Prints every probe (rate, outcome, p99, successful req/s), then the capacity
found, the first failing rate, and the capacity found / known capacity as a ratio (the former
test accepted 0.9..1.1).

--quick is --probe 2 (2 s per probe after 1 s of warm-up; about a minute). Exit 0 when a
capacity was found (whatever its ratio), 2 when the search gave none (every probe invalid, the
server did not start). The harness starts and stops the server (bench_tools runs the harness in
its own process group, torn down on every path).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import harness, write_yaml  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", type=float, default=3.0, help="measured seconds per probe")
    parser.add_argument("--sleep-ms", type=float, default=50.0, help="the sleep model's time per forward")
    parser.add_argument("--threads", type=int, default=8, help="gthread threads of the one worker")
    parser.add_argument("--quick", action="store_true", help="--probe 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.probe = 2.0
    known = args.threads / (args.sleep_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="bench_capacity-") as name:
        tmp = Path(name)
        scenario = write_yaml(tmp / "cap.yaml", {
            "name": "cap",
            "target": {"server": {"model": "sleep", "sleep_ms": args.sleep_ms, "workers": 1,
                                  "worker_class": "gthread", "threads": args.threads},
                       "payload": {"inputs": [[1.0, 2.0, 3.0]]}},
            "load": {"stages": [{"duration": "1s", "target": 1}]},
            "capacity": {"slo": ["p99_ms < 200", "error_rate < 0.001"], "start": 100,
                         "probe": f"{args.probe:g}s", "warmup": "1s", "precision": "3%"}})
        out = tmp / "out"
        run = harness(["capacity", scenario, "--out", out], out, timeout=900, summary=False)
        print(f"$ {run.command}: exit {run.exit_code}", flush=True)
        found_path = out / "capacity.json"
        if not found_path.exists():
            print(f"FAILED TO MEASURE: no capacity.json (exit {run.exit_code}):\n{run.output[-3000:]}",
                  file=sys.stderr)
            return 2
        found = json.loads(found_path.read_text())
    print(f"{'probe':>5} {'rate':>8} {'outcome':<8} {'p99 ms':>8} {'ok req/s':>9}")
    for i, probe in enumerate(found.get("probes", []), 1):
        p99 = probe.get("p99_ms")
        ok = probe.get("ok_rps")
        print(f"{i:>5} {probe['rate']:>8.1f} {probe['outcome']:<8} {'-' if p99 is None else f'{p99:.1f}':>8} "
              f"{'-' if ok is None else f'{ok:.1f}':>9}")
    for note in found.get("notes", []):
        print(f"note: {note}")
    capacity = found.get("capacity_rps")
    if capacity is None:
        print("FAILED TO MEASURE: the search found no passing rate", file=sys.stderr)
        return 2
    failing = found.get("first_failing_rps")
    print(f"\ncapacity found {capacity:.1f} req/s (first failing {'-' if failing is None else f'{failing:.1f}'}); "
          f"known capacity {args.threads} threads / {args.sleep_ms:g} ms = {known:.0f} req/s; "
          f"found / known = {capacity / known:.3f} (former test limit 0.9..1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
