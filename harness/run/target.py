"""The system under test: the bundled server started in its own process group, or a given URL.

The bundled server is started with `--port 0` (the kernel picks a free port, so parallel runs never
collide) and `--exit-with-parent` (it stops by itself if the harness is killed); the harness reads
the address it printed, waits for /v2/health/ready, and tears the whole process group down at the end.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import TargetUnusable
from harness.engines.http_client import Connection, RequestFailed
from harness.scenario.payload import request_bytes
from target_server.config import ServerConfig

LISTENING = re.compile(r"target_server listening on http://([\d.]+):(\d+)")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def server_command(config: ServerConfig) -> list[str]:
    c = config
    cmd = [sys.executable, "-m", "target_server", "--model", c.model, "--workers", str(c.workers),
           "--worker-class", c.worker_class, "--threads", str(c.threads), "--lock", c.lock,
           "--max-batch", str(c.max_batch), "--max-wait-ms", str(c.max_wait_ms),
           "--queue-limit", str(c.queue_limit), "--sleep-ms", str(c.sleep_ms),
           "--host", c.host, "--port", str(c.port), "--max-body-bytes", str(c.max_body_bytes),
           "--max-rows", str(c.max_rows), "--timeout-s", str(c.timeout_s),
           "--request-timeout-s", str(c.request_timeout_s), "--keepalive-s", str(c.keepalive_s),
           "--exit-with-parent"]
    if c.torch_threads is not None:
        cmd += ["--torch-threads", str(c.torch_threads)]
    if c.weights:
        cmd += ["--weights", c.weights]
    return cmd


class BundledServer:
    """`python -m target_server` as a child in its own session; `stop()` is safe to call twice."""

    def __init__(self, config: ServerConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, ready_timeout: float) -> Address:
        env = dict(os.environ)
        if self.config.auth_token:
            env["TARGET_SERVER_AUTH_TOKEN"] = self.config.auth_token
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(server_command(self.config), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + ready_timeout
        address = self._wait_for_address(deadline)
        self._wait_until_ready(address, deadline)
        return address

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def _fail(self, message: str) -> TargetUnusable:
        tail = self._log_tail()
        self.stop()
        return TargetUnusable(f"{message}; server log {self.log_path}:\n{tail}" if tail else message)

    def _wait_for_address(self, deadline: float) -> Address:
        assert self.proc is not None
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                return Address(match.group(1), int(match.group(2)))
            if self.proc.poll() is not None:
                raise self._fail(f"the bundled server exited with status {self.proc.returncode} before listening")
            time.sleep(0.05)
        raise self._fail("the bundled server did not start listening in time")

    def _wait_until_ready(self, address: Address, deadline: float) -> None:
        assert self.proc is not None
        raw = request_bytes("GET", address.host, address.port, "/v2/health/ready", b"", {})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._fail(f"the bundled server exited with status {self.proc.returncode} while loading")
            conn = Connection(address.host, address.port)
            try:
                if conn.request(raw, 2.0).status == 200:
                    return
            except RequestFailed:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise self._fail("the bundled server did not report ready (GET /v2/health/ready) in time")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group (gunicorn stops its workers gracefully), SIGKILL what lingers."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # workers left behind by a wedged master
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def parse_url(url: str) -> Address:
    parts = urlsplit(url)
    return Address(parts.hostname or "127.0.0.1", parts.port or 80)


def check_reachable(address: Address, timeout: float = 3.0) -> None:
    """Fail fast (exit 3) when nothing accepts connections at the given address."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return
    except OSError as exc:
        raise TargetUnusable(f"cannot connect to {address.url}: {exc.strerror or exc}; "
                             "is the server running, and is the url right?") from None


class TargetWatch:
    """Notices a target that stopped accepting connections: two failed TCP connects in a row,
    probed every 0.5 s, so a dead target is seen within about 2 s."""

    def __init__(self, address: Address, interval: float = 0.5, timeout: float = 0.5) -> None:
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.failures = 0
        self._next = 0.0

    def down(self, now: float) -> bool:
        if now < self._next:
            return self.failures >= 2
        self._next = now + self.interval
        try:
            with socket.create_connection((self.address.host, self.address.port), timeout=self.timeout):
                self.failures = 0
        except OSError:
            self.failures += 1
        return self.failures >= 2
