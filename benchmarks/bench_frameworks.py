"""Flask + gunicorn against the FastAPI twin + uvicorn workers, same models and knobs, under wrk.

    .venv/bin/python benchmarks/bench_frameworks.py [--rounds 3] [--duration 5] [--only noop|sleep|mlp] [--quick]

Needs the Debian package `wrk` (installed with apt-get when missing). Three cases, each with the
same worker count, threads and model settings for both web layers:

- `noop`: no model at all, one worker, 8 threads, 16 connections: the web layer's own ceiling.
- `sleep`: 20 ms per forward with the GIL released, one worker, 8 threads, 32 connections:
  threads bound the throughput (8 / 20 ms = 400 req/s) whichever layer serves.
- `mlp` with dynamic batching (up to 32 rows, 2 ms wait, one torch thread), one worker, 32
  threads, 32 connections: Flask needs a thread per waiting request, FastAPI's requests await
  the batcher on the event loop.

Both servers of a case are started once; rounds alternate (flask, fastapi) and each round's
FastAPI run is paired with the Flask run measured right before it. Printed: req/s, p50 and p99
per run, and per case the median of the paired ratios fastapi / flask. No target: the figures say
which layer costs less where. `--quick` is --rounds 1 --duration 3. Exit 0 when measured, 2 when a
server did not start or wrk's output was unreadable.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import PY, UNITS_MS, Proc, ensure, wait_http  # noqa: E402

ARTICLE_BODY = json.dumps({"inputs": [[1.0, 2.0, 3.0]]})
MLP_BODY = json.dumps({"inputs": [[round(((i * 37) % 101) / 50.0 - 1.0, 4) for i in range(256)]]})


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # the knobs both web layers get
    body: str
    connections: int


CASES = [
    Case("noop", ["--model", "noop", "--workers", "1", "--threads", "8"], ARTICLE_BODY, 16),
    Case("sleep", ["--model", "sleep", "--sleep-ms", "20", "--workers", "1", "--threads", "8"], ARTICLE_BODY, 32),
    Case("mlp", ["--model", "mlp", "--workers", "1", "--threads", "32", "--max-batch", "32", "--max-wait-ms", "2",
                 "--torch-threads", "1"], MLP_BODY, 32),
]
FLASK_ARGS = ["--framework", "flask", "--worker-class", "gthread"]
FASTAPI_ARGS = ["--framework", "fastapi"]


def wrk_run(wrk: str, url: str, lua: str, conns: int, seconds: float) -> dict[str, float]:
    cmd = [wrk, "-t2", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", lua, url + "/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None or non2xx:
        raise RuntimeError(f"wrk: unreadable output or errors:\n{out}")

    def pct(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)$", out, re.M)
        if m is None:
            raise RuntimeError(f"wrk printed no {label}% latency:\n{out}")
        return float(m.group(1)) * UNITS_MS[m.group(2)]

    return {"rps": float(rps.group(1)), "p50": pct("50"), "p99": pct("99")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--only", choices=[c.name for c in CASES])
    parser.add_argument("--quick", action="store_true", help="--rounds 1 --duration 3")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3.0
    (wrk,) = ensure("wrk")
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_frameworks-") as tmp:
        for case in [c for c in CASES if args.only in (None, c.name)]:
            lua = Path(tmp, f"{case.name}.lua")
            lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                           f"wrk.body = {json.dumps(case.body)}\n")
            servers = {name: Proc(name, [PY, "-m", "target_server", "--port", "0", *case.argv, *extra])
                       for name, extra in (("flask", FLASK_ARGS), ("fastapi", FASTAPI_ARGS))}
            try:
                urls = {}
                for name, server in servers.items():
                    urls[name] = server.url()
                    wait_http(urls[name] + "/v2/health/ready")
                print(f"\n{case.name}: {' '.join(case.argv)}, {case.connections} connections "
                      f"(flask: {' '.join(FLASK_ARGS)}; fastapi: {' '.join(FASTAPI_ARGS)})")
                print(f"{'round':<6} {'framework':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}", flush=True)
                for name in servers:  # warm-up, not recorded
                    wrk_run(wrk, urls[name], str(lua), case.connections, 1.0)
                pairs = []
                for rnd in range(1, args.rounds + 1):
                    got = {}
                    for name in servers:
                        got[name] = r = wrk_run(wrk, urls[name], str(lua), case.connections, args.duration)
                        print(f"{rnd:<6} {name:<9} {r['rps']:>9.1f} {r['p50']:>8.2f} {r['p99']:>8.2f}", flush=True)
                    pairs.append((got["flask"], got["fastapi"]))
            except (RuntimeError, subprocess.SubprocessError) as exc:
                print(f"FAILED TO MEASURE {case.name}: {exc}", file=sys.stderr)
                return 2
            finally:
                for server in servers.values():
                    server.stop()
            ratio = statistics.median(b["rps"] / a["rps"] for a, b in pairs)
            p99 = statistics.median(b["p99"] / a["p99"] for a, b in pairs)
            summary.append(f"{case.name:<6} fastapi / flask req/s {ratio:.3f}, p99 {p99:.3f} "
                           f"(medians of {len(pairs)} paired rounds)")
    print("\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
