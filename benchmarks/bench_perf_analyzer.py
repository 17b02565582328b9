"""Triton's perf_analyzer beside the harness on the same bundled server, settings and concurrency.

    .venv/bin/python benchmarks/bench_perf_analyzer.py [--rounds 3] [--duration 6] [--concurrency 4] [--quick]

perf_analyzer comes from `scripts/install-perf-analyzer.sh` (tritonclient 2.41.0's binary, the CUDA
runtime library it links against, Debian's libb64; no GPU needed), which this script runs first.
One server (`linear`, one gthread worker with a thread per connection) is started once. Each round
runs perf_analyzer twice, with its default binary tensors and with JSON tensors (as the harness
sends them), then the harness (threadpool engine, closed model with C users, the same v2 JSON
request), all at C requests in flight. perf_analyzer measures windows of --duration seconds and
must be stable within 100% over 3 of them (this shared 2-core machine is too noisy for its default
10%); its figures are its last window's. The script prints each tool's throughput and p50/p99 per
round and, over rounds, the median of harness / perf_analyzer throughput for both of
perf_analyzer's encodings: the target is within 10% (0.90-1.10).

`--quick` is --rounds 1 --duration 4. Exit 0 when measured (a missed target prints FAIL), 2 when
a tool could not be installed or run.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import PY, HarnessRun, Proc, harness_run, wait_http, write_yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("binary", "json")
V2_BODY = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}


def install() -> tuple[dict[str, str], str]:
    """Run the install script; return the environment and path of perf_analyzer."""
    out = subprocess.run(["bash", str(REPO / "scripts/install-perf-analyzer.sh")], capture_output=True, text=True,
                         timeout=600, check=True).stdout.strip().splitlines()[-1]
    assignment, binary = out.split(" ", 1)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = assignment.split("=", 1)[1] + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return env, binary


def perf_analyzer(binary: str, env: dict[str, str], url: str, concurrency: int, seconds: float, tmp: Path,
                  tensor_format: str) -> dict[str, float]:
    """One perf_analyzer measurement: its stable window's throughput and p50/p99 (ms)."""
    report = tmp / f"pa-{tensor_format}.csv"
    cmd = [binary, "-m", "linear", "-u", url.split("://", 1)[1], "-i", "http", "--concurrency-range",
           str(concurrency), "--measurement-interval", str(int(seconds * 1000)), "-r", "3", "-s", "100",
           f"--input-tensor-format={tensor_format}", f"--output-tensor-format={tensor_format}", "-f", str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds * 8 + 60)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"perf_analyzer exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    row = next(csv.DictReader(report.open()))
    return {"rps": float(row["Inferences/Second"]), "p50": float(row["p50 latency"]) / 1e3,
            "p99": float(row["p99 latency"]) / 1e3}


def harness_figures(run: HarnessRun) -> dict[str, float]:
    s = run.summary or {}
    return {"rps": s["ok_rps"], "p50": s["latency_ms"]["p50"], "p99": s["latency_ms"]["p99"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (perf_analyzer, harness)")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (both tools)")
    parser.add_argument("--quick", action="store_true", help="--rounds 1 --duration 4")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 4.0
    try:
        env, binary = install()
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"cannot install perf_analyzer: {exc}", file=sys.stderr)
        return 2
    c = args.concurrency
    server = Proc("target_server", [PY, "-m", "target_server", "--model", "linear", "--workers", "1",
                                    "--worker-class", "gthread", "--threads", str(c), "--port", "0"])
    rounds: list[tuple[dict[str, dict[str, float]], dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_perf_analyzer-") as name:
            tmp = Path(name)
            url = server.url()
            wait_http(url + "/v2/health/ready")
            print(f"server: {' '.join(['python'] + server.cmd[1:])} -> {url}")
            print(f"same request from both: POST /v2/models/linear/infer, JSON tensors [1, 3], {c} in flight")
            scenario = write_yaml(tmp / "v2.yaml", {
                "name": "perf-analyzer-twin",
                "target": {"endpoint": "/v2/models/linear/infer", "payload": V2_BODY},
                "load": {"model": "closed", "start": c, "stages": [{"duration": f"{args.duration:g}s", "target": c}],
                         "warmup": "1s"}})
            print(f"{'round':<6} {'tool':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}", flush=True)
            for rnd in range(1, args.rounds + 1):
                pa = {fmt: perf_analyzer(binary, env, url, c, args.duration, tmp, fmt) for fmt in FORMATS}
                for fmt in FORMATS:
                    f = pa[fmt]
                    print(f"{rnd:<6} {'pa ' + fmt:<14} {f['rps']:>9.1f} {f['p50']:>8.3f} {f['p99']:>8.3f}",
                          flush=True)
                run = harness_run(scenario, tmp / f"harness-{rnd}", url=url)
                if not run.usable:
                    print(f"{rnd:<6} {'harness':<14} NOT EVIDENCE: {run.why_not} ({run.command})", flush=True)
                    continue
                h = harness_figures(run)
                print(f"{rnd:<6} {'harness':<14} {h['rps']:>9.1f} {h['p50']:>8.3f} {h['p99']:>8.3f}   harness / pa "
                      + ", ".join(f"{fmt} {h['rps'] / pa[fmt]['rps']:.3f}" for fmt in FORMATS), flush=True)
                rounds.append((pa, h))
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"FAILED TO MEASURE: {exc}", file=sys.stderr)
        return 2
    finally:
        server.stop()
    if not rounds:
        print("FAILED TO MEASURE: no usable harness run", file=sys.stderr)
        return 2
    print()
    for fmt in FORMATS:
        ratios = [h["rps"] / pa[fmt]["rps"] for pa, h in rounds]
        ratio = statistics.median(ratios)
        verdict = "ok" if 0.90 <= ratio <= 1.10 else "FAIL"
        print(f"harness / perf_analyzer ({fmt} tensors) throughput: {ratio:.3f} (median of {len(ratios)} rounds: "
              f"{', '.join(f'{r:.3f}' for r in ratios)}); target 0.90-1.10: {verdict}")
    print("medians, ms: " + "; ".join(
        f"{name} p50 {statistics.median(get(r)['p50'] for r in rounds):.3f} p99 "
        f"{statistics.median(get(r)['p99'] for r in rounds):.3f}"
        for name, get in (("pa binary", lambda r: r[0]["binary"]), ("pa json", lambda r: r[0]["json"]),
                          ("harness", lambda r: r[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
