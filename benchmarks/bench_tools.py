"""Processes and reference clients for the benchmarks: child processes in their own session,
nginx as a null target, wrk, and a meter of the CPU other processes take meanwhile."""
from __future__ import annotations

import contextlib
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
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
        threading.Thread(target=self._read, daemon=True).start()

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


def ensure_tools() -> tuple[str, str]:
    missing = [pkg for binary, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"))
               if not shutil.which(binary, path=SBIN)]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(sudo + ["sh", "-c", f"apt-get update -qq && apt-get install -y -qq {' '.join(missing)}"],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    nginx, wrk = shutil.which("nginx", path=SBIN), shutil.which("wrk", path=SBIN)
    if not nginx or not wrk:
        sys.exit("nginx or wrk is still missing after apt-get install")
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
