"""One run, start to finish: target up, load, monitoring, samples on disk, summary, teardown.

Every process started here is torn down on every path (success, failure, Ctrl-C, SIGTERM);
Ctrl-C during the load stops it cleanly and still writes the summary of what ran (exit 130).
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.analysis import summarize
from harness.engines.base import Engine, EngineContext, create
from harness.errors import EXIT_INTERRUPTED
from harness.results import layout, meta
from harness.results import summary as summary_mod
from harness.results.resources import SERVER_ROLES
from harness.results.summary import RunResult
from harness.run.gpu import GpuSampler, open_nvml
from harness.run.live_metrics import LiveMetrics
from harness.run.models import run_model
from harness.run.monitor import ResourceMonitor, children_of
from harness.run.progress import Progress
from harness.run.scrape import MetricsScraper
from harness.run.target import Address, SystemUnderTest, TargetWatch
from harness.scenario import dataset
from harness.scenario.payload import bodies
from harness.scenario.plan import plan_from_scenario
from harness.scenario.schema import Scenario

REPORTS_DIR = Path("reports")


class Interrupted(Exception):
    pass


def new_run_dir(name: str, base: Path = REPORTS_DIR) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{i}" for i in range(2, 1000)]:
        path = base / f"{stamp}-{name}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError("cannot create a run folder")


@contextmanager
def stop_signals(on_signal: Any) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `on_signal` for the duration, then restore the old handlers."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: on_signal(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Run:
    def __init__(self, scenario: Scenario, scenario_path: Path, run_dir: Path, *, quiet: bool = False) -> None:
        self.scenario = scenario
        self.base_dir = scenario_path.parent
        self.scenario_path = scenario_path
        self.run_dir = run_dir
        self.quiet = quiet
        self.plan = plan_from_scenario(scenario)
        self.loading = False
        self.interrupted = False
        self.target = SystemUnderTest(scenario.target, self.base_dir, run_dir, self.say)
        self.failures: list[str] = []
        self.notes: list[str] = list(self.plan.notes)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def _on_signal(self, signum: int) -> None:
        if self.interrupted:
            return  # already stopping: a second Ctrl-C must not break the cleanup
        self.interrupted = True
        if not self.loading:
            raise Interrupted()
        self.say(f"\n{signal.Signals(signum).name}: stopping the load, keeping every sample so far ...")

    def execute(self) -> RunResult:
        meta.write_scenario(self.run_dir, self.scenario)
        with stop_signals(self._on_signal):
            try:
                return self._execute()
            except Interrupted:
                return self._interrupted_before_load()
            finally:
                self.target.stop()

    def _interrupted_before_load(self) -> RunResult:
        self.say("interrupted before the load started; nothing was measured")
        return RunResult(EXIT_INTERRUPTED, None)

    def _execute(self) -> RunResult:
        scenario, plan = self.scenario, self.plan
        address = self.target.start()
        if self.target.located is not None:
            self.notes.append(self.target.located.message)
        headers = self.target.headers
        model = run_model(self.scenario.target, address, headers, self.say)
        run_meta = self._meta(address, model)
        meta.write_meta(self.run_dir, run_meta)
        engine = create(EngineContext(scenario, plan, bodies(scenario, self.base_dir, model), headers, address.host,
                                      address.port, address.url, self.run_dir, tls=address.tls,
                                      base_path=address.base_path, model=model))
        monitor: ResourceMonitor | None = None
        live: LiveMetrics | None = None
        gpus: GpuSampler | None = None
        scraper: MetricsScraper | None = None
        self.say(f"load: {plan.model} model, {len(plan.segments)} stage(s), {plan.duration:g} s "
                 f"(warm-up {plan.warmup:g} s), {self._generators()}; run folder {self.run_dir}")
        for note in plan.notes:
            self.say(f"note: {note}")
        try:
            t0 = engine.start()
            run_meta["t0_monotonic"] = t0  # the run's clock on this machine: aligns other logs with the samples
            meta.write_meta(self.run_dir, run_meta)
            roles = {"generator": lambda: engine.pids, "harness": lambda: [os.getpid()]}
            pid = self.target.server_pid
            if pid is not None:
                roles.update({"server": lambda: [pid], "server_worker": children_of(pid)})
            monitor = ResourceMonitor(self.run_dir / layout.RESOURCES, t0, roles)
            monitor.start()
            nvml, gpu_line = open_nvml()
            self.say(gpu_line)
            if nvml is not None:
                server_pids = (lambda: [pid, *children_of(pid)()]) if pid is not None else (lambda: [])
                gpus = GpuSampler(nvml, self.run_dir / layout.GPU, t0, server_pids)
                gpus.start()
            if scenario.metrics_port is not None:
                watched, sampled = monitor, gpus
                live = LiveMetrics(scenario.metrics_port, self.run_dir, scenario.name, plan, t0,
                                   lambda role: watched.cpu_now(*(SERVER_ROLES if role == "server" else (role,))),
                                   lambda: sampled.latest if sampled is not None else [])
                self.say(f"live metrics: {live.url} (Prometheus text format, while the run lasts)")
            if scenario.target.scrape_metrics:
                scraper = MetricsScraper(address.url + "/metrics", self.run_dir / layout.METRICS, t0,
                                         headers=headers, log=self.say,
                                         context=address.tls.context() if address.tls else None)
                scraper.start()
            self.loading = True
            if self.interrupted:
                engine.stop()
            stopped_at = self._drive(engine, t0, address)
        finally:
            self.loading = False
            engine.stop()
            engine.close(timeout=scenario.target.timeout + 5)
            if live is not None:
                live.stop()
            if gpus is not None:
                gpus.stop()
            if monitor is not None:
                monitor.stop()
            if scraper is not None:
                scraper.stop()
        self.failures += engine.reasons()
        result = summarize.build(self.run_dir, meta=run_meta, plan=plan, thresholds=scenario.parsed_thresholds,
                                 max_in_flight=scenario.load.max_in_flight, stopped_at=stopped_at,
                                 interrupted=self.interrupted, reasons=self.failures, notes=self.notes,
                                 dataset_requests=dataset.check(scenario.target.dataset.path)
                                 if scenario.target.dataset else None,
                                 goodput=scenario.goodput_slo)
        summary_mod.write(self.run_dir, result)
        return RunResult(result["exit_code"], result)

    def _meta(self, address: Address, model: str | None) -> dict[str, Any]:
        """What summary.json says about the run besides its figures (also kept in run.json)."""
        scenario, plan = self.scenario, self.plan
        return {
            "name": scenario.name, "scenario_file": str(self.scenario_path),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "engine": scenario.engine, "load_model": plan.model,
            "arrival": plan.arrival if plan.model == "open" else None,
            "generator_processes": (scenario.generator.processes if scenario.engine == "threadpool"
                                    else max(scenario.locust.workers, 1)),
            "target": {"url": address.url, "bundled": self.target.bundled,
                       "endpoint": scenario.target.endpoint,
                       "api": scenario.target.api, "model": model,
                       "server": self.target.describe(),
                       "process": self.target.located.as_meta() if self.target.located else None,
                       "server_settings": (scenario.target.server.model_dump(exclude={"auth_token"})
                                           if scenario.target.server else None)},
        }

    def _generators(self) -> str:
        if self.scenario.engine == "locust":
            workers = self.scenario.locust.workers
            return f"Locust ({workers} workers)" if workers else "Locust (1 local process)"
        return f"{self.scenario.generator.processes} generator process(es)"

    def _target_down(self, watch: TargetWatch, now: float) -> bool:
        return self.target.exited() or watch.down(now)

    def _drive(self, engine: Engine, t0: float, address: Address) -> float:
        """Relay progress until the generators finish; returns when the load stopped (s from t0)."""
        progress = Progress(self.plan, t0, quiet=self.quiet)
        hard_stop = t0 + self.plan.duration + self.scenario.target.timeout + 10
        stopped_at = None
        watch = TargetWatch(address)
        down_since: float | None = None
        while not engine.finished:
            progress.update(engine.messages(0.25))
            now = time.monotonic()
            if self.interrupted and stopped_at is None:
                stopped_at = now - t0
                engine.stop()
            if stopped_at is None and down_since is None and self._target_down(watch, now):
                down_since = now - t0
                what = ("the bundled server exited" if self.target.exited()
                        else f"the target stopped accepting connections at {address.url}")
                if self.scenario.target.on_down == "stop":
                    stopped_at = down_since
                    self.failures.append(f"{what} {down_since:.1f} s into the run; the run was stopped "
                                         "(target.on_down: stop)")
                    engine.stop()
                else:
                    self.notes.append(f"{what} {down_since:.1f} s into the run; the load went on "
                                      "(target.on_down: continue)")
            if now > hard_stop:
                engine.stop()
                break
        progress.finish()
        return stopped_at if stopped_at is not None else self.plan.duration
