"""The package as users install it: build a wheel, install it into a fresh virtual environment,
and from a folder outside the checkout run a threadpool and a Locust scenario and start the web UI.

    python3 scripts/check_wheel.py      # exit 0 when all three work; 1 with the reason otherwise

Run by .ci/run after the tests. It uses only the standard library and the pinned install path
(constraints.txt), and tears down every process it starts (each in its own session).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI_LINE = re.compile(r"Locust web UI: (http://[\d.]+:\d+)")


def step(text: str) -> None:
    print(f"check_wheel: {text}", flush=True)


def run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"check_wheel: {' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}"
                         f"\n{result.stderr[-3000:]}")
    return result


def build_and_install(tmp: Path) -> Path:
    """The wheel built from the checkout, installed with its dependencies into tmp/venv."""
    builder = ROOT / ".venv" / "bin" / "python"  # has setuptools: no build-time download needed
    run([str(builder if builder.exists() else sys.executable), "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)], ROOT, 600)
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' staging folder, not part of the checkout
    wheel = next((tmp / "dist").glob("*.whl"))
    step(f"built {wheel.name}")
    run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp, 120)
    run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
         str(wheel)], tmp, 1200)
    step("installed it into a fresh venv")
    return tmp / "venv" / "bin" / "harness"


def check_runs(harness: str, work: Path) -> None:
    for engine in ("threadpool", "locust"):
        out = work / f"run-{engine}"
        run([harness, "run", "smoke.yaml", "--quiet", "--out", str(out), "--set", f"engine={engine}"], work, 300)
        summary = json.loads((out / "summary.json").read_text())
        if not (summary["requests"] > 0 and summary["valid"] and summary["engine"] == engine):
            raise SystemExit(f"check_wheel: the {engine} run measured nothing valid: {summary['invalid_reasons']}")
        step(f"{engine} engine: {summary['requests']} requests, exit 0, from {work}")


def check_ui(harness: str, work: Path) -> None:
    """`harness ui` serves Locust's page; Ctrl-C stops it (130: no request was sent)."""
    proc = subprocess.Popen([harness, "ui", "smoke.yaml", "--web-port", "0", "--out", str(work / "ui")], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        deadline, url, seen = time.monotonic() + 120, None, []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            match = UI_LINE.search(line)
            url = match.group(1) if match else None
        if url is None:
            raise SystemExit("check_wheel: harness ui printed no web UI address:\n" + "".join(seen[-20:]))
        for _ in range(100):
            try:
                page = urllib.request.urlopen(url, timeout=5).read().decode(errors="replace")
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"check_wheel: {url} did not answer")
        if "locust" not in page.lower():
            raise SystemExit(f"check_wheel: {url} is not Locust's page")
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
        if code != 130:
            raise SystemExit(f"check_wheel: harness ui exited {code} on Ctrl-C (expected 130)")
        step(f"web UI served at {url} and stopped on Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="check-wheel-"))
    try:
        harness = str(build_and_install(tmp))
        work = tmp / "elsewhere"
        work.mkdir()
        shutil.copy(ROOT / "scenarios" / "smoke.yaml", work / "smoke.yaml")
        check_runs(harness, work)
        check_ui(harness, work)
        step("ok")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
