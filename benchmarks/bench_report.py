"""Benchmark the report on a synthetic run folder of 1,000,000 samples: time and peak memory.

    .venv/bin/python benchmarks/bench_report.py [--samples 1000000] [--rounds 3] [--keep DIR]

Writes a realistic run folder (open-model ramp past the server's capacity, two generator files,
Server-Timing values, errors under overload, resources every 0.5 s, a Prometheus scrape every
second), builds its summary.json like a real run does, then times `python -m harness report DIR`
in a child process (`--rounds` times; the machine is shared, so the median is judged) and reads
each child's peak RSS from wait4(). Limits (issue 5): <= 10 s and <= 1.5 GB; exit code 1 when the
median time or the largest peak exceeds them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.results import summary as summary_mod  # noqa: E402
from harness.analysis import summarize  # noqa: E402
from harness.scenario.plan import LoadPlan  # noqa: E402
from harness.results.samples import COLUMNS  # noqa: E402
from harness.scenario.thresholds import parse_threshold  # noqa: E402

TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 1536.0
CAPACITY = 2500.0  # req/s the synthetic server can serve
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def scenario_doc(samples: int) -> dict:
    """Warm-up at 500 req/s, then a ramp to 3,000 req/s and a hold, scaled to `samples` arrivals."""
    scale = samples / 1_010_000
    stages = [{"duration": 20.0 * scale, "target": 500.0}, {"duration": 400.0 * scale, "target": 3000.0},
              {"duration": 100.0 * scale, "target": 3000.0}]
    return {"name": "bench-1m", "target": {"url": "http://127.0.0.1:9", "endpoint": "/predict"},
            "engine": "threadpool",
            "load": {"model": "open", "start": 500.0, "stages": stages, "warmup": 20.0 * scale,
                     "arrival": "constant", "seed": 0, "max_in_flight": 256},
            "generator": {"processes": 2}, "thresholds": ["p99_ms < 250", "error_rate < 0.01"]}


def synthetic_samples(plan: LoadPlan, rng: np.random.Generator) -> pd.DataFrame:
    """A server of CAPACITY req/s: queueing grows with utilisation, 503s and timeouts past it."""
    intended = np.fromiter(plan.arrivals(), dtype=np.float64)
    n = intended.size
    rho = np.array([plan.target_at(t) for t in np.arange(0, plan.duration + 1)])[intended.astype(int)] / CAPACITY
    infer = rng.lognormal(np.log(0.4), 0.3, n)
    queue = np.where(rho < 0.97, rng.exponential(1.0, n) * 1.2 * rho / (1 - np.minimum(rho, 0.97)),
                     rng.exponential(1.0, n) * 40 * (rho - 0.9) * 10)
    other = rng.lognormal(np.log(1.0), 0.4, n)
    lag = rng.exponential(0.05, n) / 1000.0
    start = intended + lag
    end = start + (queue + infer + other) / 1000.0
    status = np.full(n, 200, dtype=np.int32)
    error = np.full(n, "", dtype=object)
    overload = rng.random(n) < np.clip((rho - 1.0) * 0.5, 0, 1)
    status[overload], error[overload] = 503, "http"
    timeout = rng.random(n) < np.clip((rho - 1.1) * 0.02, 0, 1)
    status[timeout], error[timeout] = 0, "timeout"
    end[timeout] = start[timeout] + 10.0
    return pd.DataFrame({"intended": intended, "start": start, "end": end, "status": status, "error": error,
                         "bytes": np.where(status == 200, 23, 40),
                         "stage": np.searchsorted([s.start for s in plan.segments], intended, side="right") - 1,
                         "gen": np.arange(n) % 2, "srv_queue_ms": np.where(status > 0, queue, np.nan),
                         "srv_infer_ms": np.where(status > 0, infer, np.nan),
                         "srv_total_ms": np.where(status > 0, queue + infer + 0.3, np.nan)}).reindex(columns=COLUMNS)


def synthetic_resources(plan: LoadPlan, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for t in np.arange(0.45, plan.duration, 0.5):
        load = min(plan.target_at(t) / CAPACITY, 1.0)
        rows.append((t, "system", 0, min(100.0, 60 * load + 10), 900_000_000, 0))
        rows.append((t, "server", 100, rng.uniform(0, 2), 25_000_000, 2))
        for pid in (101, 102):
            rows.append((t, "server_worker", pid, 90 * load + rng.uniform(0, 5), 240_000_000 + int(t * 2000), 1))
        for pid in (200, 201):
            rows.append((t, "generator", pid, 10 + 15 * load + rng.uniform(0, 3), 50_000_000, 40))
        rows.append((t, "harness", 99, rng.uniform(0, 3), 80_000_000, 3))
    return pd.DataFrame(rows, columns=["t", "role", "pid", "cpu_percent", "rss_bytes", "threads"])


def synthetic_metrics(df: pd.DataFrame, duration: float) -> pd.DataFrame:
    """Cumulative Prometheus counters and histograms scraped once a second from the samples."""
    rows = []
    ok = df["status"].to_numpy() > 0
    second = np.floor(df["end"].to_numpy()[ok]).astype(int)
    status = df["status"].to_numpy()[ok]
    total = (df["end"] - df["start"]).to_numpy()[ok]
    for name, values in (("inference_request_duration_seconds", total),
                         ("inference_queue_duration_seconds", df["srv_queue_ms"].to_numpy()[ok] / 1000.0),
                         ("inference_compute_duration_seconds", df["srv_infer_ms"].to_numpy()[ok] / 1000.0)):
        order = np.argsort(second, kind="stable")
        sec, vals = second[order], values[order]
        for t in range(int(duration) + 1):
            seen = vals[: np.searchsorted(sec, t, side="right")]
            counts = np.searchsorted(np.sort(seen), LATENCY_BUCKETS, side="right")
            for le, c in zip(LATENCY_BUCKETS, counts):
                rows.append((t + 0.5, f"{name}_bucket", f'le="{le}"', float(c)))
            rows.append((t + 0.5, f"{name}_bucket", 'le="+Inf"', float(seen.size)))
            rows.append((t + 0.5, f"{name}_sum", "", float(seen.sum())))
            rows.append((t + 0.5, f"{name}_count", "", float(seen.size)))
    for code in np.unique(status):
        cumulative = np.cumsum(np.bincount(second[status == code], minlength=int(duration) + 2))
        for t in range(int(duration) + 1):
            rows.append((t + 0.5, "inference_requests_total", f'endpoint="/predict",status="{code}"',
                         float(cumulative[t])))
    return pd.DataFrame(rows, columns=["t", "name", "labels", "value"])


def build_run_folder(run_dir: Path, samples: int) -> None:
    rng = np.random.default_rng(5)
    doc = scenario_doc(samples)
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    load = doc["load"]
    plan = LoadPlan.from_stages("open", [(s["duration"], s["target"]) for s in load["stages"]],
                                start=load["start"], warmup=load["warmup"])
    df = synthetic_samples(plan, rng)
    for gen in (0, 1):
        df[df["gen"] == gen].to_csv(run_dir / f"samples-{gen}.csv", index=False, float_format="%.6f", na_rep="")
    synthetic_resources(plan, rng).to_csv(run_dir / "resources.csv", index=False, float_format="%.3f")
    synthetic_metrics(df, plan.duration).to_csv(run_dir / "metrics.csv", index=False)
    meta = {"name": doc["name"], "scenario_file": "synthetic", "started_at": "2026-01-01T00:00:00+00:00",
            "engine": "threadpool", "load_model": "open", "arrival": "constant", "generator_processes": 2,
            "target": {"url": "http://127.0.0.1:9", "bundled": False, "endpoint": "/predict", "server": None,
                       "server_settings": None}}
    thresholds = [parse_threshold(t) for t in doc["thresholds"]]
    result = summarize.build(run_dir, meta=meta, plan=plan, thresholds=thresholds, max_in_flight=256,
                               stopped_at=plan.duration, interrupted=False, reasons=[])
    summary_mod.write(run_dir, result)


def time_report(run_dir: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of `python -m harness report run_dir`."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "harness", "report", str(run_dir)], cwd=REPO,
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024.0, child.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000, help="requests in the synthetic run")
    parser.add_argument("--rounds", type=int, default=3, help="times to render the report")
    parser.add_argument("--keep", type=Path, help="write the run folder here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    run_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building a synthetic run folder with ~{args.samples:,} samples in {run_dir} ...", flush=True)
        build_run_folder(run_dir, args.samples)
        rows = sum(len(pd.read_csv(p, usecols=["gen"])) for p in run_dir.glob("samples-*.csv"))
        size = sum(p.stat().st_size for p in run_dir.iterdir()) / 2**20
        print(f"run folder: {rows:,} samples, {size:.0f} MB on disk")
        results = []
        for round_ in range(1, args.rounds + 1):
            elapsed, peak_mb, code = time_report(run_dir)
            results.append((elapsed, peak_mb, code))
            html = run_dir / "report.html"
            print(f"round {round_}: report {elapsed:.2f} s wall, peak RSS {peak_mb:.0f} MB, exit {code}, "
                  f"report.html {html.stat().st_size / 2**20 if html.exists() else 0:.1f} MB", flush=True)
        median = statistics.median(r[0] for r in results)
        peak = max(r[1] for r in results)
        ok = all(r[2] == 0 for r in results) and median <= TIME_LIMIT_S and peak <= MEMORY_LIMIT_MB
        print(f"report of {rows:,} samples: median {median:.2f} s, peak RSS {peak:.0f} MB "
              f"(limits {TIME_LIMIT_S:g} s, {MEMORY_LIMIT_MB:.0f} MB) -> {'OK' if ok else 'EXCEEDED'}")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
