"""What response checks cost: checks on every response ÷ no checks, against the bundled `linear` server.

    .venv/bin/python benchmarks/bench_checks.py [--duration 5] [--rounds 3] [--users 8] [--engine threadpool]

The bundled server with `--model linear` and 2 sync gunicorn workers (as benchmarks/bench_server.py
runs it) is started once; the harness then runs a closed loop at `--users` users against it, in
back-to-back pairs (order alternating): one run without checks (an external url and no
`target.expect`: nothing is kept or parsed), one with `target.expect: {json_path: predictions,
sample: 1.0}` (every body kept, parsed with orjson and walked). The figure is the median over
pairs of successful req/s with checks ÷ without: need >= 0.95. A run is evidence only when it
exits 0 or 1 and its summary says valid; a checked run must also have no error (every answer of
the server has `predictions`). A last short run with a path the answers lack shows that checks
really ran on every response (error rate 1.0, all of kind check).

Exit 0 when the figure was measured (a missed target prints FAIL), 2 when it could not be.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tools import PY, HarnessRun, Proc, harness_run, wait_http, write_yaml  # noqa: E402

TARGET = 0.95
SERVER_ARGS = ["--model", "linear", "--workers", "2", "--worker-class", "sync"]


def scenario(path: Path, engine: str, users: int, seconds: float, expect: dict | None) -> Path:
    target: dict = {"endpoint": "/predict", "timeout": "10s", "scrape_metrics": False}
    if expect is not None:
        target["expect"] = expect
    return write_yaml(path, {"name": path.stem, "engine": engine, "target": target,
                             "load": {"model": "closed", "start": users, "warmup": "1s",
                                      "stages": [{"duration": f"{seconds + 1:g}s", "target": users}]}})


def cpu_us(run: HarnessRun) -> float | None:
    """Generator CPU per request (µs): the cost of checking itself, less moved by the server's limit."""
    cpu, rps = run.figure("generator", "cpu_percent_mean"), run.figure("rps")
    return cpu / 100 / rps * 1e6 if cpu and rps else None


def describe(run: HarnessRun) -> str:
    ok, cpu = run.figure("ok_rps"), cpu_us(run)
    if ok is None:
        return run.why_not
    return f"{ok:8.1f} ok req/s, errors {run.figure('errors'):.0f}, generator {cpu or 0:.0f} µs CPU/request"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--engine", choices=["threadpool", "locust"], default="threadpool")
    args = parser.parse_args(argv)

    server = Proc("linear", [PY, "-m", "target_server", "--port", "0"] + SERVER_ARGS)
    try:
        url = server.url()
        wait_http(url + "/v2/health/ready")
        print(f"server: python -m target_server {' '.join(SERVER_ARGS)} at {url}")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            plain = scenario(folder / "plain.yaml", args.engine, args.users, args.duration, None)
            checked = scenario(folder / "checked.yaml", args.engine, args.users, args.duration,
                               {"json_path": "predictions", "sample": 1.0})
            pairs: list[tuple[float, float]] = []
            cpu_pairs: list[tuple[float, float]] = []
            for k in range(args.rounds):
                order = [("checked", checked), ("plain", plain)] if k % 2 else [("plain", plain), ("checked", checked)]
                runs = {name: harness_run(path, folder / f"{name}-{k}", url=url) for name, path in order}
                for name, _ in order:
                    print(f"round {k + 1} {name:8s}: {describe(runs[name])}   ({runs[name].command})")
                a, b = runs["checked"], runs["plain"]
                if a.usable and b.usable and not a.figure("errors"):
                    pairs.append((a.figure("ok_rps") or 0.0, b.figure("ok_rps") or 0.0))
                    if cpu_us(a) and cpu_us(b):
                        cpu_pairs.append((cpu_us(b) or 0.0, cpu_us(a) or 0.0))
                else:
                    why = [f"checked: {a.why_not or 'errors'}" if a.why_not or a.figure("errors") else "",
                           f"plain: {b.why_not}" if b.why_not else ""]
                    print(f"round {k + 1}: not evidence ({'; '.join(w for w in why if w)})")
            sanity = harness_run(scenario(folder / "missing.yaml", args.engine, args.users, 1.0,
                                          {"json_path": "no_such_field", "sample": 1.0}), folder / "missing", url=url)
            kinds = (sanity.summary or {}).get("errors_by_kind")
            print(f"sanity: json_path no_such_field -> error rate {sanity.figure('error_rate')}, by kind {kinds}")
    finally:
        server.stop()
    if not pairs:
        print("checks ÷ no checks: not measured (no valid pair)")
        return 2
    ratios = [a / b for a, b in pairs if b]
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"checks on every response (json_path, sample 1.0) ÷ no checks, {args.engine}, {args.users} users: "
          f"median of {len(ratios)} pairs = {ratio:.3f} (pairs {min(ratios):.3f}..{max(ratios):.3f}; "
          f"need >= {TARGET}): {verdict}")
    if cpu_pairs:
        cpu = [a / b for a, b in cpu_pairs]
        print(f"context: generator CPU per request, no checks ÷ checks, median of {len(cpu)} pairs = "
              f"{statistics.median(cpu):.3f} (pairs {min(cpu):.3f}..{max(cpu):.3f}; 1.0 = checking costs nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
