"""The Locust engine: Locust runs as a subprocess (never imported here: it monkey-patches the
process with gevent), fed a plan file, and writes sample rows in the harness's schema.

`locust: {workers: N}` starts Locust's own master plus N workers on this machine; rows from the
workers reach the master over Locust's messages, so remote workers work the same way.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.engines.base import EngineContext, ProgressMessage, register
from harness.engines.locust_plan import PARENT_ENV, PLAN_ENV, plan_document, write_plan
from harness.engines.sample_tail import SampleTail
from harness.errors import TargetUnusable
from harness.processes import end_process_group
from harness.results import layout
from harness.results.layout import log_tail
from target_server.ports import free_port

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"  # shipped in the package
class LocustProcesses:
    """A Locust master (or single local runner) and its workers, each in its own session."""

    def __init__(self, run_dir: Path, plan_doc: dict[str, Any], url: str, workers: int,
                 extra_args: list[str], *, remote_workers: int = 0, master_host: str = "127.0.0.1",
                 master_port: int = 0) -> None:
        self.run_dir = run_dir
        self.plan_path = write_plan(run_dir, plan_doc)
        self.url = url
        self.workers = workers
        self.remote_workers = remote_workers
        self.master_host = master_host
        self.master_port = master_port
        self.extra_args = extra_args
        self.master: subprocess.Popen[bytes] | None = None
        self.worker_procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, PLAN_ENV: str(self.plan_path), PARENT_ENV: str(os.getpid())}
        with open(self.run_dir / log_name, "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)

    def start(self) -> None:
        args = ["--host", self.url, *self.extra_args]
        expected = self.workers + self.remote_workers
        if expected == 0:
            self.master = self._spawn(args, layout.LOCUST_LOG)
            return
        port = self.master_port or free_port()
        args += ["--master", "--expect-workers", str(expected), "--master-bind-host", self.master_host,
                 "--master-bind-port", str(port)]
        self.master = self._spawn(args, layout.LOCUST_LOG)
        connect_to = "127.0.0.1" if self.master_host in ("0.0.0.0", "::") else self.master_host
        self.worker_procs = [self._spawn(["--worker", "--master-host", connect_to, "--master-port", str(port)],
                                         f"locust-worker-{i}.log") for i in range(self.workers)]
        if self.remote_workers:
            print(f"waiting for {self.remote_workers} remote Locust worker(s); on each worker machine run:\n"
                  f"  HARNESS_LOCUST_PLAN=locust-plan.json python -m locust -f {LOCUSTFILE} "
                  f"--worker --master-host <this machine's address> --master-port {port}\n"
                  f"  (copy {self.plan_path} there as locust-plan.json)", file=sys.stderr, flush=True)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in [self.master, *self.worker_procs] if p is not None and p.poll() is None]

    def master_alive(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def log_tail(self) -> str:
        return log_tail(self.run_dir / layout.LOCUST_LOG, 12)

    def stop(self) -> None:
        """SIGINT the master: Locust stops the users, writes its CSV/HTML and tells workers to quit.

        Not SIGTERM: headless Locust installs its SIGTERM handler only after a LoadTestShape run
        ends, so during one SIGTERM kills the master outright (no quitting event, no status file,
        workers never told and left sending load until `close` kills them)."""
        if self.master_alive():
            assert self.master is not None
            self.master.send_signal(signal.SIGINT)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in [self.master, *self.worker_procs]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            end_process_group(proc, 3.0)


class LocustEngine:
    """The Engine for `engine: locust`: Locust headless, following the plan, in its own processes."""

    def __init__(self, context: EngineContext) -> None:
        scenario, plan, run_dir = context.scenario, context.plan, context.run_dir
        doc = plan_document(scenario, plan, context.bodies, context.headers, run_dir, plan.model, context.tls,
                            model=context.model)
        options = scenario.locust
        self.processes = LocustProcesses(
            run_dir, doc, context.url, options.workers,
            ["--headless", "--csv", str(run_dir / "locust"), "--html", str(run_dir / "locust.html"),
             "--only-summary"],
            remote_workers=options.remote_workers, master_host=options.master_host,
            master_port=options.master_port)
        self.run_dir = run_dir
        self.tail = SampleTail(run_dir)

    @property
    def pids(self) -> list[int]:
        return self.processes.pids

    def start(self, ready_timeout: float = 60.0) -> float:
        """Start Locust and wait for its test start; returns t0 on this host's monotonic clock."""
        self.processes.start()
        if self.processes.remote_workers:
            ready_timeout += 600  # people need time to start workers on other machines
        clock = self.run_dir / layout.LOCUST_CLOCK
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if clock.exists():
                try:
                    return float(json.loads(clock.read_text())["t0"])
                except (ValueError, KeyError):
                    pass
            if not self.processes.master_alive():
                break
            time.sleep(0.05)
        tail = self.processes.log_tail()
        self.processes.stop()
        self.processes.close(5)
        raise TargetUnusable(f"Locust did not start its test (see {self.run_dir / layout.LOCUST_LOG})"
                             + (f":\n{tail}" if tail else ""))

    def messages(self, timeout: float) -> list[ProgressMessage]:
        time.sleep(timeout)
        return self.tail.progress()

    @property
    def finished(self) -> bool:
        return not self.processes.master_alive()

    def stop(self) -> None:
        self.processes.stop()

    def close(self, timeout: float) -> None:
        self.processes.close(timeout)

    def reasons(self) -> list[str]:
        """Validity problems only Locust knows about."""
        status_path = self.run_dir / layout.LOCUST_STATUS
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            return []
        if status.get("cpu_warning"):
            return ["Locust reported a generator process above 90% CPU: its timings are not trustworthy; "
                    "add locust.workers or lower the load"]
        return []


register("locust")(LocustEngine)
