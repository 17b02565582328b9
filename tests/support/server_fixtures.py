"""Shared helpers for the bundled target server's tests: Flask test clients and real server processes.

`RunningServer` starts `python -m target_server --port 0 ...` in its own session, reads the URL it
prints, waits for /v2/health/ready, remembers every process (master + workers) and, on `stop()`,
SIGTERMs the process group and reports any process still alive. Use it through `start_server`,
which always cleans up (SIGKILL as a last resort), even when the test fails.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import requests

from tests.support import ROOT as REPO

URL_RE = re.compile(r"target_server listening on (https?://\S+)")
ARTICLE_INPUT = [[1.0, 2.0, 3.0]]


def make_app(**settings):
    """A Flask app built by the real factory (model loaded and warmed up) for the given settings."""
    from target_server.app import create_app
    from target_server.config import ServerConfig

    return create_app(ServerConfig(**settings))


def make_client(framework: str = "flask", **settings):
    """A test client of the Flask app, or of the FastAPI twin with the same surface."""
    if framework == "fastapi":
        from target_server.asgi import create_asgi_app
        from target_server.config import ServerConfig
        from tests.support.asgi_client import AsgiClient

        app = create_asgi_app(ServerConfig(framework="fastapi", **settings))
        inner = app
        while not hasattr(inner, "state"):  # through the request-id (and auth) middleware to FastAPI
            inner = inner.app
        return AsgiClient(app, inner.state.target_server["strategy"])
    return make_app(**settings).test_client()


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("TARGET_SERVER_STATE_DIR", None)
    for key in list(env):
        if key.startswith("TARGET_SERVER_"):
            env.pop(key)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Drain(threading.Thread):
    """Reads a pipe to the end so the child never blocks on a full pipe; keeps every line."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.cv = threading.Condition()

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            with self.cv:
                self.lines.append(raw.decode("utf-8", "replace"))
                self.cv.notify_all()
        with self.cv:
            self.lines.append("")  # EOF marker
            self.cv.notify_all()

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cv:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                    if line == "":
                        return None
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cv.wait(remaining)

    def text(self) -> str:
        with self.cv:
            return "".join(self.lines)


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def survivors(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


class RunningServer:
    def __init__(self, argv: list[str], *, launcher: list[str] | None = None, ready_timeout: float = 60.0,
                 verify: bool | str = True):
        if launcher is None and "--port" not in argv:
            argv = [*argv, "--port", "0"]  # a kernel-chosen port, never the default 8000
        self.argv = argv
        cmd = (launcher or [sys.executable, "-m", "target_server"]) + argv
        self.popen = subprocess.Popen(cmd, cwd=REPO, env=server_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        self.pgid = self.popen.pid  # its own session, so its own process group
        self.out = _Drain(self.popen.stdout)
        self.err = _Drain(self.popen.stderr)
        self.out.start()
        self.err.start()
        self.procs: list[psutil.Process] = []
        self.url = ""
        self.ready_timeout = ready_timeout
        self.verify = verify  # for https: a CA file, or False for a certificate nobody can check

    def wait_started(self) -> RunningServer:
        """Wait for the printed URL and for /v2/health/ready, then remember every process."""
        ready_timeout = self.ready_timeout
        match = self.out.wait_for(URL_RE, ready_timeout)
        if match is None:
            raise RuntimeError(f"server printed no URL within {ready_timeout:g}s\n{self.logs()}")
        self.url = match.group(1).rstrip("/")
        self.wait_ready(ready_timeout)
        self.procs = self.group_processes()
        return self

    def logs(self) -> str:
        return f"--- stdout ---\n{self.out.text()}--- stderr ---\n{self.err.text()}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2, verify=self.verify).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url} not ready within {timeout:g}s\n{self.logs()}")

    def group_processes(self) -> list[psutil.Process]:
        """Every live process of the server's session: launcher (if any), master and workers."""
        root = psutil.Process(self.popen.pid)
        return [root] + root.children(recursive=True)

    def gunicorn_master(self) -> psutil.Process:
        """The process that printed the URL: the root, or with a launcher its child."""
        for proc in self.procs:
            if "target_server" in " ".join(proc.cmdline()) and "-c" not in proc.cmdline():
                return proc
        raise AssertionError(f"no gunicorn master among {self.procs}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> list[psutil.Process]:
        """Signal the process group; return the processes still alive after `timeout`."""
        procs = self.procs or self.group_processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)
        left = survivors(procs, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        return left

    def kill_everything(self) -> None:
        """Last resort in `finally`: SIGKILL the group and anything remembered, reap the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        for stream in (self.popen.stdout, self.popen.stderr):
            with contextlib.suppress(Exception):
                stream.close()


@contextlib.contextmanager
def start_server(argv: list[str], **kwargs) -> Iterator[RunningServer]:
    """Start a server, yield it, then SIGTERM it and assert that no process of it survived."""
    server = RunningServer(argv, **kwargs)
    try:
        server.wait_started()
        yield server
        left = server.stop()
        assert not left, f"processes left after SIGTERM: {left}\n{server.logs()}"
    finally:
        server.kill_everything()
