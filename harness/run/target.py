"""The system under test: the bundled server started in its own process group, or a given URL.

The bundled server is started with `--port 0` (the kernel picks a free port, so parallel runs never
collide) and `--exit-with-parent` (it stops by itself if the harness is killed); the harness reads
the address it printed, waits for /v2/health/ready, and tears the whole process group down at the end.
With `tls: true` and no certificate files, the harness makes a self-signed certificate in the run
folder (tls/), hands it to the server and trusts it as the CA, so HTTPS is verified end to end.
"""
from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.engines.http_client import Connection, RequestFailed, request_bytes
from harness.engines.tls import ClientTLS, describe
from harness.errors import TargetUnusable
from harness.processes import end_process_group
from harness.results.layout import SERVER_LOG, log_tail
from harness.run.server_process import Located, locate
from harness.scenario.loading import resolve
from harness.scenario.schema import ServerSettings, Target
from harness.scenario.urls import split_url
from target_server.config import ServerConfig
from target_server.tls import self_signed

LISTENING = re.compile(r"target_server listening on (https?)://([\d.]+):(\d+)")
TLS_DIR = "tls"  # in the run folder: the bundled server's self-signed certificate and key
CLIENT_CERT_WAIT = 0.2  # s after a TLS 1.3 handshake for the server to refuse our client certificate


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    scheme: str = "http"
    base_path: str = ""  # put before every endpoint
    tls: ClientTLS | None = None  # how to speak HTTPS to it (set exactly when scheme is https)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base_path}"

    def connection(self) -> Connection:
        """A lean-client connection to the target (over TLS for https)."""
        if self.tls is None:
            return Connection(self.host, self.port)
        return Connection(self.host, self.port, tls=self.tls.context(), server_name=self.tls.server_name)


def server_command(config: ServerConfig) -> list[str]:
    return [sys.executable, "-m", "target_server", *config.to_argv(), "--exit-with-parent"]


class BundledServer:
    """`python -m target_server` as a child in its own session; `stop()` is safe to call twice."""

    def __init__(self, config: ServerConfig, log_path: Path, tls: ClientTLS | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.tls = tls  # how the harness checks the server's certificate (config.tls only)
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

    def _fail(self, message: str) -> TargetUnusable:
        tail = log_tail(self.log_path)
        self.stop()
        return TargetUnusable(f"{message}; server log {self.log_path}:\n{tail}" if tail else message)

    def _wait_for_address(self, deadline: float) -> Address:
        assert self.proc is not None
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                scheme = match.group(1)
                return Address(match.group(2), int(match.group(3)), scheme,
                               tls=(self.tls or ClientTLS()) if scheme == "https" else None)
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
            conn = address.connection()
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
        if self.proc is not None:
            end_process_group(self.proc, grace)


def parse_url(url: str, tls: ClientTLS | None = None) -> Address:
    """The address of a target url; https gets `tls` (default: verify with the system's CAs)."""
    scheme, host, port, base_path = split_url(url)
    return Address(host, port, scheme, base_path, (tls or ClientTLS()) if scheme == "https" else None)


def check_reachable(address: Address, timeout: float = 3.0) -> None:
    """Fail fast (exit 3) when nothing accepts connections at the given address, or, over HTTPS,
    when the TLS handshake fails (a certificate problem in one line: expired, wrong host, unknown CA)."""
    context = address.tls.context() if address.tls is not None else None  # bad files: exit 2 first
    try:
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    except OSError as exc:
        raise TargetUnusable(f"cannot connect to {address.url}: {exc.strerror or exc}; "
                             "is the server running, and is the url right?") from None
    with sock:
        if context is None or address.tls is None:
            return
        try:
            with context.wrap_socket(sock, server_hostname=address.tls.server_name or address.host) as tls_sock:
                if not _client_certificate_accepted(tls_sock):
                    raise TargetUnusable(f"TLS with {address.url}: the server closed the connection right after "
                                         "the handshake; does it require a client certificate "
                                         "(target.tls.cert_file, key_file)?")
        except ssl.SSLError as exc:
            raise TargetUnusable(f"TLS with {address.url}: {describe(exc)}") from None
        except OSError as exc:
            raise TargetUnusable(f"TLS with {address.url}: the handshake failed: {exc.strerror or exc}; "
                                 "does the server speak HTTPS on this port?") from None


def _client_certificate_accepted(sock: ssl.SSLSocket) -> bool:
    """In TLS 1.3 a server refuses a missing or unknown client certificate only after the
    handshake: wait briefly for that alert (an SSLError) or a close (False; the alert can be lost
    to the reset) before calling the target usable."""
    if sock.version() != "TLSv1.3":
        return True
    sock.settimeout(CLIENT_CERT_WAIT)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True


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


class SystemUnderTest:
    """A run's target from its scenario: the bundled server started here, or a URL already running.

    `start()` brings it up (or checks it is reachable) and returns its address; `stop()` tears down
    what was started and is safe to call on every path, twice included."""

    def __init__(self, target: Target, base_dir: Path, run_dir: Path, say: Callable[[str], None]) -> None:
        self.target = target
        self.base_dir = base_dir
        self.run_dir = run_dir
        self.say = say
        self.server: BundledServer | None = None
        self.located: Located | None = None  # a url target's server process, or why none is known

    def start(self) -> Address:
        target = self.target
        if target.url is not None:
            address = parse_url(target.url, self._client_tls())
            check_reachable(address)
            self.say(f"target: {address.url} (already running)")
            self.located = locate(target.process, address.host, address.port)
            self.say(self.located.message)
            return address
        settings = target.server or ServerSettings()
        overrides: dict[str, object] = {"host": "127.0.0.1", "port": 0}
        overrides["weights"] = str(resolve(self.base_dir, settings.weights)) if settings.weights else None
        tls = None
        if settings.tls:
            if settings.certfile:
                cert, key = resolve(self.base_dir, settings.certfile), resolve(self.base_dir, settings.keyfile)
            else:
                cert, key = self_signed(self.run_dir / TLS_DIR)
            overrides.update(certfile=str(cert), keyfile=str(key))
            tls = self._client_tls(default_ca=str(cert))
            tls.context()  # unusable files: exit 2 with their path before the server starts
        config = settings.to_config(**overrides)
        self.server = BundledServer(config, self.run_dir / SERVER_LOG, tls)
        self.say(f"starting bundled server: {config.describe()}")
        address = self.server.start(target.ready_timeout)
        self.say(f"target: {address.url} (bundled, ready)")
        return address

    def _client_tls(self, default_ca: str | None = None) -> ClientTLS:
        """target.tls with its files resolved against the scenario's folder."""
        t = self.target.tls

        def path(name: str | None) -> str | None:
            return str(resolve(self.base_dir, name)) if name else None

        return ClientTLS(verify=t.verify, ca_file=path(t.ca_file) or default_ca, cert_file=path(t.cert_file),
                         key_file=path(t.key_file), server_name=t.server_name)

    @property
    def headers(self) -> dict[str, str]:
        """The scenario's headers, plus the bundled server's bearer token when it has one."""
        headers = dict(self.target.headers)
        if self.server is not None and self.server.config.auth_token:
            headers.setdefault("Authorization", f"Bearer {self.server.config.auth_token}")
        return headers

    @property
    def bundled(self) -> bool:
        return self.server is not None

    @property
    def server_pid(self) -> int | None:
        """The server's top process, whose descendants are its workers (None: none known)."""
        if self.server is not None:
            return self.server.pid
        return self.located.pid if self.located is not None else None

    def describe(self) -> str | None:
        """The bundled server's settings in one line (None for a URL target)."""
        return self.server.config.describe() if self.server is not None else None

    def exited(self) -> bool:
        """True when the bundled server has died (never for a URL target: TargetWatch probes that)."""
        return self.server is not None and not self.server.alive()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
