"""The harness CLI as a child process the test owns, and the check that a run left no process behind.

`HarnessProcess` starts `python -m harness ARGS` (output to files, so nothing blocks on a full pipe),
remembers every process it starts while the test watches, and on leaving its `with` block, on any
path (a failed assertion, a timeout, pytest's own timeout), SIGKILLs whatever is still alive: the
harness, its descendants, and the processes its run folder recorded (server, workers, generators).
When the harness exited by itself, leaving the block also checks that everything it started exited
too (survivors are killed and reported). `harness()` runs one command to completion through it.
`assert_all_gone()` checks a run folder's recorded processes explicitly.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import psutil

from tests.support import ROOT

T = TypeVar("T")
CHILD_NAMES = ("target_server", "gunicorn", "locust", "harness", "multiprocessing")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *,
               proc: HarnessProcess | None = None, poll: float = 0.05) -> T:
    """Poll until `predicate()` is truthy and return its value; fail naming `what` on timeout, or at
    once (with its output) when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = predicate()  # it may have finished the condition on its way out
            if value:
                return value
            raise AssertionError(f"the harness exited ({proc.returncode}) before {what}\n{proc.output_tail()}")
        if time.monotonic() >= deadline:
            tail = f"\n{proc.output_tail()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(poll)


def complete_rows(samples: Path) -> int:
    """Sample rows written so far as whole lines (the header excluded)."""
    try:
        data = samples.read_bytes()
    except FileNotFoundError:
        return 0
    return max(0, data.count(b"\n") - 1)


def started_pids(run_dir: Path) -> set[int]:
    """Every process a run recorded: gunicorn master and workers (server.log), and each process in
    resources.csv (the server, its workers, the generators: threadpool processes or Locust)."""
    pids: set[int] = set()
    log = run_dir / "server.log"
    if log.exists():
        text = log.read_text(errors="replace")
        pids |= {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)}
        pids |= {int(p) for p in re.findall(r"Listening at: \S+ \((\d+)\)", text)}
    resources = run_dir / "resources.csv"
    # a url target's server (found by its port) is sampled too, but the run did not start it
    roles = ("generator", "server", "server_worker") if _bundled(run_dir) else ("generator",)
    if resources.exists():
        for line in resources.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(",")
            if len(parts) > 2 and parts[1] in roles and parts[2].isdigit():
                pids.add(int(parts[2]))
    return pids


def _bundled(run_dir: Path) -> bool:
    """Whether the run started the bundled server (run.json; True when it cannot tell)."""
    try:
        return bool(json.loads((run_dir / "run.json").read_text())["target"].get("bundled", True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _existing(pids: Iterable[int], created_before: float) -> list[psutil.Process]:
    """The live processes among `pids` that already existed at `created_before` (epoch seconds): a
    pid reused later by an unrelated process is not one of ours."""
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() <= created_before and _alive(proc):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def assert_all_gone(run_dir: Path, within: float = 15.0, also: Iterable[psutil.Process] = ()) -> None:
    """Every process the run recorded (and each of `also`) has exited, or does so within `within` s."""
    pids = started_pids(run_dir)
    assert pids, f"the run recorded no process ids in {run_dir}"
    now = time.time()
    procs = _existing(pids, now) + [p for p in also if _alive(p)]
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive:
            return
        if time.monotonic() >= deadline:
            described = []
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    described.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            raise AssertionError(f"processes left running after the run: {described}")
        time.sleep(0.1)


class HarnessProcess:
    """`python -m harness ARGS` owned by the test; use it as a context manager."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, out: Path | None = None,
                 cwd: Path = ROOT) -> None:
        self.args = list(args)
        if out is None and "--out" in self.args:
            out = Path(self.args[self.args.index("--out") + 1])
        self.out = out
        self.started = time.time()
        self._logs = tempfile.TemporaryDirectory(prefix="harness-test-")
        self.stdout_path = Path(self._logs.name) / "stdout"
        self.stderr_path = Path(self._logs.name) / "stderr"
        self.known: dict[int, psutil.Process] = {}
        with open(self.stdout_path, "wb") as out_file, open(self.stderr_path, "wb") as err_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness", *self.args], cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out_file, stderr=err_file)
        self.pid = self.proc.pid

    # --- output and state -----------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output_tail(self, chars: int = 3000) -> str:
        return f"--- stdout ---\n{self.stdout[-chars:]}\n--- stderr ---\n{self.stderr[-chars:]}"

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        if self.proc.poll() is None:
            self.descendants()
        return self.proc.returncode

    def descendants(self) -> list[psutil.Process]:
        """The harness's live descendants now; each is remembered for the cleanup."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            found = []
        for proc in found:
            self.known.setdefault(proc.pid, proc)
        return found

    # --- control ---------------------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        self.descendants()
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        """Wait for the harness to exit; past `timeout`, kill everything and fail with its output."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() >= deadline:
                tail = self.output_tail()
                self.kill_all()
                raise AssertionError(f"harness {' '.join(self.args)} did not exit within {timeout:g} s\n{tail}")
            self.descendants()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.2)
        return int(self.proc.returncode)

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this harness still alive: remembered descendants and what the run recorded."""
        procs = [p for p in self.known.values() if _alive(p)]
        if self.out is not None:
            seen = {p.pid for p in procs}
            procs += [p for p in _existing(started_pids(self.out), time.time())
                      if p.pid not in seen and p.pid != os.getpid() and self._ours(p)]
        return procs

    def _ours(self, proc: psutil.Process) -> bool:
        try:
            return proc.create_time() >= self.started - 1 and any(
                name in " ".join(proc.cmdline()) for name in CHILD_NAMES)
        except psutil.Error:
            return False

    def kill_all(self) -> None:
        """SIGKILL the harness and every process it started that is still alive, and reap them."""
        if self.proc.poll() is None:
            self.descendants()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        left = self.leftovers()
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=10)

    def wait_gone(self, within: float = 15.0) -> list[psutil.Process]:
        """After the harness exited: wait for what it started to exit too; return what did not."""
        deadline = time.monotonic() + within
        while True:
            left = self.leftovers()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def __enter__(self) -> HarnessProcess:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Still running (the test failed or stopped early): kill it all. Exited: everything it
        started must be gone too; survivors are killed and, unless the test already failed, reported."""
        try:
            if self.proc.poll() is None:
                self.kill_all()
                return
            left = self.wait_gone()
            if left:
                described = []
                for proc in left:
                    with contextlib.suppress(psutil.Error):
                        described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                self.kill_all()
                if exc_type is None:
                    raise AssertionError(f"processes left running after the harness exited: {described}")
        finally:
            self._logs.cleanup()


def harness(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `python -m harness ARGS` to completion (killed with everything it started past `timeout`)."""
    with HarnessProcess(*args, env=env, cwd=cwd) as proc:
        code = proc.wait(timeout)
        return subprocess.CompletedProcess(proc.args, code, proc.stdout, proc.stderr)


# A run's own verdict that the generator, not the server, fell behind (harness.analysis.validity and
# the Locust bridge word them so).
GENERATOR_BEHIND = ("although slots were free", "% of a core (limit", "generator process above 90% CPU")


def assert_exit(result: subprocess.CompletedProcess[str], expected: int, run_dir: Path) -> None:
    """Assert a run's exit code where the generator's timeliness is not the subject. On a loaded
    machine a short run can rightly judge itself invalid (exit 3) because the generator sent late
    or ran hot; that verdict is accepted only when it is the run's sole reason, so any other
    failure still fails the test. The verdict itself is tested in tests/analysis."""
    if result.returncode == expected:
        return
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    reasons = json.loads((run_dir / "summary.json").read_text())["invalid_reasons"]
    assert reasons and all(any(mark in r for mark in GENERATOR_BEHIND) for r in reasons), output
