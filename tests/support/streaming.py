"""The fixed-timing streaming server of benchmarks/ as a real process for end-to-end tests."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support import ROOT

SCRIPT = ROOT / "benchmarks" / "stream_server.py"


class StreamServer:
    """`with StreamServer(ttft_ms=20, itl_ms=5, fault=None) as server: server.url ...`"""

    def __init__(self, ttft_ms: float = 20.0, itl_ms: float = 5.0, fault: str | None = None,
                 certfile: Path | None = None, slots: int = 0) -> None:
        args = [sys.executable, str(SCRIPT), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms),
                "--slots", str(slots)]
        if fault:
            args += ["--fault", fault]
        if certfile:
            args += ["--certfile", str(certfile), "--keyfile", str(certfile)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        found = re.search(r"listening on (https?://[\d.]+:\d+)", line)
        if not found:
            self.close()
            raise RuntimeError(f"the stream server did not start: {line!r}")
        self.url = found.group(1)

    def stats(self) -> dict:
        """The server's own record of what it sent (plain HTTP only)."""
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as answer:
            return json.loads(answer.read())

    def writes(self) -> dict[str, list[float]]:
        """When the server wrote each token, by X-Request-ID (time.monotonic(), this machine's clock)."""
        with urllib.request.urlopen(self.url + "/stats/writes", timeout=5) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> StreamServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
