"""`python -m harness ui`: the bundled server (or a URL) plus Locust's web UI, torn down on Ctrl-C.

Users are set by hand in the UI; every request still lands as a sample row in a run folder, and
a summary of what ran is written when the UI is stopped.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from pathlib import Path

from harness.analysis import summarize
from harness.engines.locust_bridge import LocustProcesses
from harness.engines.locust_plan import plan_document
from harness.engines.web_auth import WEB_AUTH_ENV, parse_credentials
from harness.errors import EXIT_INTERRUPTED, UserError
from harness.report.console import summary_table
from harness.results import layout
from harness.results import summary as summary_mod
from harness.results.samples import read_samples
from harness.results.summary import Summary
from harness.run.models import run_model
from harness.run.runner import Interrupted, stop_signals
from harness.run.target import SystemUnderTest
from harness.scenario.payload import bodies
from harness.scenario.plan import LoadPlan, plan_from_scenario
from harness.scenario.schema import Scenario
from target_server.ports import free_port, port_taken

DEFAULT_WEB_PORT = 8089  # Locust's own default
UI_START_TIMEOUT_S = 60.0


def choose_web_port(host: str, asked: int | None) -> int:
    """The asked port, or Locust's 8089 when free, else any free port: a second UI must not collide."""
    try:
        if asked is not None:
            if asked and port_taken(host, asked):
                raise UserError(f"--web-port {asked}: {host}:{asked} is already in use")
            return asked or free_port(host)
        return free_port(host) if port_taken(host, DEFAULT_WEB_PORT) else DEFAULT_WEB_PORT
    except OSError as exc:
        raise UserError(f"--web-host {host}: cannot listen there: {exc.strerror or exc}") from None


def wait_listening(host: str, port: int, processes: LocustProcesses, timeout: float) -> bool:
    """Announce the address only once it answers: a browser opened at once must not be refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes.master_alive():
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def describe_auth() -> str:
    """Check HARNESS_WEB_AUTH before anything starts; say whether the UI is protected."""
    value = os.environ.get(WEB_AUTH_ENV)
    if not value:
        return "no login"
    try:
        user, _ = parse_credentials(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return f"basic auth, user {user!r}"


def serve_ui(scenario: Scenario, scenario_path: Path, run_dir: Path, *, web_host: str, web_port: int | None,
             workers: int) -> int:
    auth = describe_auth()
    web_port = choose_web_port(web_host, web_port)
    target = SystemUnderTest(scenario.target, scenario_path.parent, run_dir,
                             lambda text: print(text, file=sys.stderr, flush=True))
    processes: LocustProcesses | None = None
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if not stopping:  # the first signal stops; later ones must not break the cleanup
            stopping = True
            raise Interrupted()

    with stop_signals(on_signal):
        try:
            address = target.start()
            model = run_model(scenario.target, address, target.headers, lambda text: print(text, flush=True))
            doc = plan_document(scenario, plan_from_scenario(scenario), bodies(scenario, scenario_path.parent, model),
                                target.headers, run_dir, mode="ui", tls=address.tls, model=model)
            processes = LocustProcesses(run_dir, doc, address.url, workers,
                                        ["--web-host", web_host, "--web-port", str(web_port)])
            processes.start()
            if not wait_listening(web_host, web_port, processes, UI_START_TIMEOUT_S):
                raise UserError(f"Locust's web UI did not come up on {web_host}:{web_port} within "
                                f"{UI_START_TIMEOUT_S:.0f} s; see {run_dir / layout.LOCUST_LOG}")
            print(f"Locust web UI: http://{web_host}:{web_port}  ({auth}; target {address.url}; "
                  "Ctrl-C to stop)", flush=True)
            print(f"samples go to {run_dir}", flush=True)
            while processes.master_alive():
                time.sleep(0.5)
            print(f"Locust exited; see {run_dir / layout.LOCUST_LOG}", file=sys.stderr)
        except Interrupted:
            print("\nstopping Locust and the server ...", file=sys.stderr)
        finally:
            if processes is not None:
                processes.stop()
                processes.close(timeout=15)
            target.stop()
    result = write_ui_summary(scenario, scenario_path, run_dir)
    if result is not None:
        print(summary_table(result))
    print(f"run folder: {run_dir}")
    return EXIT_INTERRUPTED if result is None else 0


def write_ui_summary(scenario: Scenario, scenario_path: Path, run_dir: Path) -> Summary | None:
    """Summarise whatever the UI-driven swarms sent, as one stage spanning the recorded time."""
    df = read_samples(run_dir)
    if df.empty:
        print("no request was sent from the UI; nothing to summarise", file=sys.stderr)
        return None
    span = float(df["intended"].max()) + 1e-3
    plan = LoadPlan.from_stages("closed", [(span, 0)])
    run_meta = {"name": scenario.name, "scenario_file": str(scenario_path),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "engine": "locust-ui", "load_model": "closed", "arrival": None, "generator_processes": 1,
            "target": {"url": None, "bundled": scenario.target.url is None, "endpoint": scenario.target.endpoint,
                       "api": scenario.target.api, "model": scenario.target.model,
                       "server": None, "server_settings": None}}
    result = summarize.build(run_dir, meta=run_meta, plan=plan, thresholds=scenario.parsed_thresholds,
                             max_in_flight=scenario.load.max_in_flight, stopped_at=span, interrupted=False,
                             reasons=[], goodput=scenario.goodput_slo)
    for stage in result["stages"]:
        stage["description"] = "users set in the web UI"
    summary_mod.write(run_dir, result)
    return result
