"""Processes and reference clients for the benchmarks: child processes in their own session,
`python -m harness` runs judged by exit code and validity, nginx as a null target, wrk, paired
ratios, and a meter of the CPU other processes take meanwhile.

Debian packages the benchmarks use, installed with apt-get when missing (`ensure`):
wrk (package `wrk`) and nginx (package `nginx-light`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
LISTENING = re.compile(r"listening on (http://\S+)")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


# processes ---------------------------------------------------------------------------------
class Proc:
    """A child in its own session; stop() ends its whole process group (TERM, then KILL)."""

    def __init__(self, name: str, cmd: list[str], *, cwd: Path = REPO) -> None:
        self.name = name
        self.cmd = cmd
        self.log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_SERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip())

    def url(self, timeout: float = 120.0) -> str:
        """The http:// URL the child prints once it listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.lines:
                if m := LISTENING.search(line):
                    return m.group(1).rstrip("/")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.errors()}")

    def wait(self, timeout: float) -> int:
        """The exit status once the child ends; on timeout its group is stopped and TimeoutError raised."""
        try:
            code = self.proc.wait(timeout=timeout)
            self.reader.join(timeout=5)  # its last lines
            return code
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"{self.name} still running after {timeout:g} s: {shlex.join(self.cmd)}") from None

    def output(self) -> str:
        """What the child printed on stdout so far."""
        return "\n".join(self.lines)

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # any straggler of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "hey": "hey"}  # binary -> Debian package


def ensure(*binaries: str) -> list[str]:
    """Paths of the binaries, installing their Debian packages (PACKAGES) with apt-get when missing."""
    missing = [PACKAGES[b] for b in binaries if not shutil.which(b, path=SBIN)]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"installing Debian package(s) {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(sudo + ["sh", "-c", f"apt-get update -qq && apt-get install -y -qq {' '.join(missing)}"],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    paths = [shutil.which(b, path=SBIN) for b in binaries]
    if not all(paths):
        sys.exit(f"still missing after apt-get install: {', '.join(b for b, p in zip(binaries, paths) if not p)} "
                 f"(Debian packages {', '.join(PACKAGES[b] for b in binaries)})")
    return paths  # type: ignore[return-value]


def ensure_tools() -> tuple[str, str]:
    """nginx (Debian package nginx-light) and wrk (package wrk)."""
    nginx, wrk = ensure("nginx", "wrk")
    return nginx, wrk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} is not listening on port {port}:\n{proc.errors()}")


def start_nginx(nginx: str, workdir: Path, workers: str) -> tuple[Proc, str]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""daemon off;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{{"predictions": [[0.0]]}}'; }}
    }}
}}
""")
    proc = Proc("nginx", [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


class Background:
    """CPU (in cores) used by everything but this benchmark's own processes while a run lasted."""

    def __init__(self, servers: list[Proc]) -> None:
        self.servers = servers

    def _now(self) -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        ours = kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime
        for server in self.servers:  # running children are not in RUSAGE_CHILDREN yet
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(server.proc.pid)
                for proc in [root] + root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        c = proc.cpu_times()
                        ours += c.user + c.system
        return time.monotonic(), busy, ours

    def __enter__(self) -> "Background":
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        wall = end[0] - self.start[0]
        self.cores = max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / wall) if wall > 0 else 0.0


# clients -----------------------------------------------------------------------------------
@dataclass
class Result:
    client: str
    config: str
    rps: float
    p50_ms: float | None
    command: str
    note: str = ""
    background: float | None = None  # cores busy with other processes meanwhile
    valid: bool = True  # the harness's own verdict on its run (summary.json "valid")


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def run_wrk(wrk: str, url: str, *, threads: int, conns: int, seconds: float, lua: str | None = None) -> Result:
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--latency"] + (["-s", lua] if lua else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)$", out, re.M)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    note = "; ".join(x for x in (errors and f"socket errors: {errors.group(1)}",
                                 non2xx and f"non-2xx: {non2xx.group(1)}") if x)
    return Result("wrk", f"-t{threads} -c{conns}", rps, float(p50.group(1)) * UNITS_MS[p50.group(2)] if p50 else None,
                  shlex.join(cmd), note)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered 200")


# harness runs ------------------------------------------------------------------------------
EXIT_MEANING = {0: "passed", 1: "threshold failed", 2: "bad usage or input", 3: "invalid run or target unusable",
                130: "interrupted"}


@dataclass
class HarnessRun:
    """One `python -m harness ...` invocation: its exit code, summary (None when none was written)."""

    command: str
    exit_code: int
    out: Path
    summary: dict | None
    output: str = ""

    @property
    def usable(self) -> bool:
        """Evidence: the run finished (exit 0, or 1 = a threshold failed) and judged itself valid."""
        return self.exit_code in (0, 1) and self.summary is not None and bool(self.summary.get("valid"))

    @property
    def why_not(self) -> str:
        """Why a run is not evidence ('' when it is)."""
        if self.usable:
            return ""
        reasons = [f"exit {self.exit_code} ({EXIT_MEANING.get(self.exit_code, 'unexpected')})"]
        if self.summary is None:
            reasons.append("no summary.json")
        elif not self.summary.get("valid"):
            reasons.append("INVALID: " + "; ".join(self.summary.get("invalid_reasons") or ["(no reason given)"]))
        return ", ".join(reasons)

    def figure(self, *path: str) -> float | None:
        value: object = self.summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) else None


def write_yaml(path: Path, doc: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def harness(args: list[str], out: Path, *, timeout: float = 600.0, summary: bool = True) -> HarnessRun:
    """Run `python -m harness ARGS` in the repository (own process group, always torn down)."""
    cmd = [PY, "-m", "harness"] + [str(a) for a in args]
    proc = Proc("harness", cmd)
    try:
        code = proc.wait(timeout)
    finally:
        proc.stop()
    path = out / "summary.json"
    data = json.loads(path.read_text()) if summary and path.exists() else None
    shown = shlex.join(["python"] + cmd[1:])
    return HarnessRun(shown, code, out, data, proc.output() + "\n" + proc.errors())


def harness_run(scenario: Path | str, out: Path, *, url: str | None = None, sets: dict[str, object] | None = None,
                timeout: float = 600.0) -> HarnessRun:
    """`python -m harness run SCENARIO --out OUT --quiet [--url URL] [--set K=V ...]`."""
    args: list[object] = ["run", scenario, "--out", out, "--quiet"] + (["--url", url] if url else [])
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return harness(args, out, timeout=timeout)


# paired ratios -----------------------------------------------------------------------------
def paired(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median, min and max of a/b over pairs measured next to each other."""
    ratios = [a / b for a, b in pairs if b]
    if not ratios:
        raise ValueError("no pair with a non-zero reference")
    return statistics.median(ratios), min(ratios), max(ratios)


def spread(pairs: list[tuple[float, float]]) -> str:
    """'median 0.93 (pairs 0.88..0.97, n=3)' for pairs measured next to each other."""
    med, low, high = paired(pairs)
    return f"{med:.2f}" + (f" (pairs {low:.2f}..{high:.2f}, n={len(pairs)})" if len(pairs) > 1 else " (1 pair)")
