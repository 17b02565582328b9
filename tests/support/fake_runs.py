"""Synthetic run folders and a fake capacity target, for workflow tests that need no real run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.analysis import summarize
from harness.results import summary as summary_mod
from harness.results.summary import RunResult, Summary
from harness.scenario.plan import LoadPlan
from harness.scenario.schema import Scenario
from harness.scenario.thresholds import parse_threshold


def fake_run(path: Path, *, latency_ms: float = 20.0, rps: float = 100.0, seconds: int = 20, seed: int = 0,
             error_rate: float = 0.0, valid: bool = True, check: dict | None = None,
             server: dict | None = None, system_cpu: float | None = None, steady: bool = False,
             server_rss: tuple[float, float] | None = None, thresholds: list[str] | None = None,
             gpu_csv: str | None = None) -> Path:
    """A run folder with noisy closed-model-like samples (a ramp from 0 to 4 users, or 4 users
    throughout when `steady`), its summary.json and scenario.yaml; with `system_cpu`, a
    resources.csv whose whole-machine CPU reads that (% of all cores) every 0.5 s; with
    `server_rss` (MB at the start, MB/s of growth), a server worker's RSS there too; `gpu_csv`:
    the run's gpu.csv as it stands."""
    rng = np.random.default_rng(seed)
    n = int(rps * seconds)
    intended = np.sort(rng.uniform(0, seconds, n))
    latency = latency_ms * rng.lognormal(0, 0.15, n) / 1000
    error = np.where(rng.random(n) < error_rate, "http", "")
    df = pd.DataFrame({"intended": intended, "start": intended, "end": intended + latency,
                       "status": np.where(error == "http", 500, 200), "error": error, "bytes": 20,
                       "stage": 0, "gen": 0, "srv_queue_ms": "", "srv_infer_ms": ""})
    path.mkdir(parents=True)
    df.to_csv(path / "samples-0.csv", index=False)
    ticks = np.arange(0.5, seconds + 0.25, 0.5)
    frames = []
    if system_cpu is not None:
        frames.append(pd.DataFrame({"t": ticks, "role": "system", "pid": 0, "cpu_percent": system_cpu,
                                    "rss_bytes": 0, "threads": 0}))
    if server_rss is not None:
        rss_mb = server_rss[0] + server_rss[1] * ticks + rng.normal(0, 0.3, ticks.size)
        frames.append(pd.DataFrame({"t": ticks, "role": "server_worker", "pid": 4242, "cpu_percent": 50.0,
                                    "rss_bytes": (rss_mb * 2**20).astype(np.int64), "threads": 4}))
    if gpu_csv is not None:
        (path / "gpu.csv").write_text(gpu_csv)
    if frames:
        pd.concat(frames).sort_values("t", kind="stable").to_csv(path / "resources.csv", index=False)
    meta = {"name": "fake", "engine": "threadpool", "load_model": "closed", "arrival": None,
            "generator_processes": 1, "target": {"url": "http://127.0.0.1:1", "bundled": True,
                                                 "endpoint": "/predict", "server": None, "server_settings": server}}
    plan = LoadPlan.from_stages("closed", [(float(seconds), 4.0)], start=4.0 if steady else 0.0, warmup=2.0)
    summary = summarize.build(path, meta=meta, plan=plan, thresholds=[parse_threshold(t) for t in thresholds or []],
                              max_in_flight=256, stopped_at=seconds, interrupted=False,
                              reasons=[] if valid else ["generator saturated"])
    summary_mod.write(path, summary)
    stages = [{"duration": float(seconds), "target": 4.0}]
    (path / "scenario.yaml").write_text(yaml.safe_dump({"name": "fake", "check": check or {},
                                                        "load": {"model": "closed", "stages": stages, "warmup": 2.0}}))
    return path


CAPACITY_SCENARIO = """
name: cap
target:
  server: {model: sleep, sleep_ms: 50, workers: 1, worker_class: gthread, threads: 8}
  payload: {inputs: [[1.0, 2.0, 3.0]]}
load:
  stages: [{duration: 1s, target: 1}]
capacity:
  slo: [p99_ms < 200, error_rate < 0.001]
  start: 100
  probe: 3s
  warmup: 1s
  precision: 3%
"""


class FakeTarget:
    """Passes the SLO up to `capacity` req/s; rates listed in `invalid` give invalid probes."""

    def __init__(self, capacity: float, invalid: tuple[float, ...] = (), flaky: float | None = None) -> None:
        self.capacity, self.invalid, self.flaky, self.rates = capacity, invalid, flaky, []

    def __call__(self, scenario: Scenario, path: Path, run_dir: Path) -> RunResult:
        rate = scenario.load.stages[-1].target
        assert scenario.load.model == "open" and scenario.thresholds == ["p99_ms < 200", "error_rate < 0.001"]
        self.rates.append(rate)
        passed = rate <= self.capacity and not (rate == self.flaky and self.rates.count(rate) > 1)
        p99 = 60.0 if passed else 900.0
        summary = Summary(valid=rate not in self.invalid, passed=passed, ok_rps=rate, error_rate=0.0,
                          latency_ms={"p50": p99 / 3, "p95": p99 / 1.5, "p99": p99},
                          thresholds=[{"expression": "p99_ms < 200", "passed": passed}],
                          invalid_reasons=["generator saturated"] if rate in self.invalid else [],
                          interrupted=False)
        return RunResult(0 if passed else 1, summary)
