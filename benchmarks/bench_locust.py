"""Benchmark the Locust engine for issue 4 and print the figures measured side by side in one run.

    .venv/bin/python benchmarks/bench_locust.py

1. Accuracy under stalls: a server that freezes 1 s in every 5 s (benchmarks/delay_server.py, 1 ms
   service time otherwise), driven by the Locust engine's open model at a constant 100 req/s for
   20 s: its p90 and p99 against their analytic values (bench_harness.analytic_freeze_quantile:
   p90 = 0.501 s, p99 = 0.951 s), each within 20%.
2. Scale-out: against nginx returning a fixed JSON body, the merged throughput of the Locust
   engine with `locust.workers: 2` (master + 2 worker processes) against `locust.workers: 1`
   (master + 1 worker), closed model, 16 users: >= 1.5x. A single local Locust process (no
   master) is printed too, for context.

Everything runs through `python -m harness run`; the servers are started and stopped here.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_harness import FREEZE_S, PERIOD_S, SERVICE_MS, analytic_freeze_quantile  # noqa: E402
from bench_tools import REPO, Proc, ensure_tools, start_nginx, wait_http  # noqa: E402

PY = sys.executable
RATE, SECONDS = 100, 20


def harness_run(tmp: Path, name: str, doc: dict, url: str) -> dict:
    scenario = tmp / f"{name}.yaml"
    scenario.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp / name
    cmd = [PY, "-m", "harness", "run", str(scenario), "--url", url, "--out", str(out), "--quiet"]
    print("  $ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return json.loads((out / "summary.json").read_text())


def freeze_accuracy(tmp: Path) -> list[tuple[str, float, float, bool]]:
    server = Proc("delay_server", [PY, str(REPO / "benchmarks" / "delay_server.py"), "--delay-ms", str(SERVICE_MS),
                                   "--freeze-s", str(FREEZE_S), "--period-s", str(PERIOD_S)])
    try:
        url = server.url()
        wait_http(url + "/stats")
        doc = {"name": "locust-freeze", "engine": "locust", "target": {"endpoint": "/predict", "timeout": "5s"},
               "load": {"model": "open", "arrival": "constant", "start": RATE,
                        "stages": [{"duration": f"{SECONDS}s", "target": RATE}], "max_in_flight": 256}}
        summary = harness_run(tmp, "locust-freeze", doc, url)
    finally:
        server.stop()
    rows = []
    for key, q in (("p90", 0.90), ("p99", 0.99)):
        truth = analytic_freeze_quantile(q) * 1000
        got = summary["latency_ms"][key]
        rows.append((key, got, truth, abs(got - truth) <= 0.2 * truth))
    print(f"  valid={summary['valid']} requests={summary['requests']} not_sent={summary['accounting']['not_sent']}")
    return rows


def scale_out(tmp: Path) -> tuple[float, float]:
    nginx_bin, _ = ensure_tools()
    nginx, url = start_nginx(nginx_bin, tmp, "1")
    try:
        base = {"engine": "locust", "target": {"endpoint": "/"},
                "load": {"model": "closed", "start": 16, "stages": [{"duration": "8s", "target": 16}],
                         "warmup": "2s"}}
        local = harness_run(tmp, "locust-local", {"name": "locust-local", **base}, url)
        one = harness_run(tmp, "locust-1worker", {"name": "locust-1worker", **base, "locust": {"workers": 1}}, url)
        two = harness_run(tmp, "locust-2workers", {"name": "locust-2workers", **base, "locust": {"workers": 2}}, url)
    finally:
        nginx.stop()
    print(f"  (context: one local Locust process without a master: {local['rps']:.0f} req/s)")
    return one["rps"], two["rps"]


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench_locust-") as name:
        tmp = Path(name)
        print(f"== 1. Locust open model, constant {RATE} req/s for {SECONDS} s, server frozen "
              f"{FREEZE_S:g} s every {PERIOD_S:g} s", flush=True)
        for key, got, truth, ok in freeze_accuracy(tmp):
            failures += not ok
            print(f"  {key}: measured {got:.1f} ms, analytic {truth:.1f} ms, ratio {got / truth:.3f} "
                  f"(need within 20%): {'PASS' if ok else 'FAIL'}")
        print("== 2. Locust scale-out against nginx (closed model, 16 users)", flush=True)
        one, two = scale_out(tmp)
        ratio = two / one
        ok = ratio >= 1.5
        failures += not ok
        print(f"  master + 1 worker {one:.0f} req/s, master + 2 workers {two:.0f} req/s: ratio {ratio:.2f} "
              f"(need >= 1.5): {'PASS' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
