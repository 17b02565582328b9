"""What request data from a file costs: a 100,000-line dataset ÷ one fixed body, and a 1,000,000-line
dataset's memory.

    .venv/bin/python benchmarks/bench_dataset.py [--duration 5] [--rounds 3] [--users 8] [--engine threadpool]
                                                 [--lines 100000] [--big-lines 1000000] [--processes 2]

1. Ceiling: nginx returning a fixed JSON body on loopback (started as benchmarks/bench_harness.py
   starts it), a closed loop at `--users` users, in back-to-back pairs (order alternating): one run
   sending one fixed body of ~400 bytes (`target.payload`), one sending a dataset of `--lines`
   distinct bodies of the same size (`target.dataset`). The figure is the median over pairs of
   successful req/s with the dataset ÷ the fixed body: need >= 0.95. At the ceiling the generator is
   the bottleneck by design, so a run the harness calls invalid only for its generator's CPU counts.
2. Memory: a dataset of `--big-lines` lines (~400 bytes each, ~400 MB) run for a few seconds at
   `--processes` generator processes; printed: the time the harness took to check the file, and the
   peak RSS of the harness and its generators together (resources.csv, summed per sample): need
   <= 1.5 GB.

A run is evidence only when it exits 0 or 1 and its summary says valid, without errors.
Exit 0 when the figures were measured (a missed target prints FAIL), 2 when they could not be.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tools import HarnessRun, ensure_tools, harness_run, spread, start_nginx, write_yaml  # noqa: E402

RATIO_TARGET = 0.95
RSS_TARGET_GB = 1.5
WIDTH = 40  # numbers per body: ~400 bytes of JSON


def body(i: int) -> dict:
    return {"inputs": [[round((i * 7919 + j) % 100003 / 100003, 6) for j in range(WIDTH)]]}


def write_dataset(path: Path, lines: int) -> int:
    with path.open("w") as f:
        for start in range(0, lines, 10_000):
            f.write("".join(json.dumps(body(i)) + "\n" for i in range(start, min(lines, start + 10_000))))
    return path.stat().st_size


def scenario(path: Path, engine: str, users: int, seconds: float, target: dict, processes: int = 1) -> Path:
    return write_yaml(path, {"name": path.stem, "engine": engine, "generator": {"processes": processes},
                             "target": {"endpoint": "/predict", "timeout": "10s", "scrape_metrics": False, **target},
                             "load": {"model": "closed", "start": users, "warmup": "1s",
                                      "stages": [{"duration": f"{seconds + 1:g}s", "target": users}]}})


def evidence(run: HarnessRun) -> bool:
    """Valid and without errors; or invalid only because the generator used a whole core, which is
    what a ceiling run is meant to be (as in benchmarks/bench_tls.py), for both sides alike."""
    reasons = (run.summary or {}).get("invalid_reasons") or []
    generator_bound = run.exit_code == 3 and bool(reasons) and all("of a core" in r for r in reasons)
    return (run.usable or generator_bound) and run.summary is not None and not run.figure("errors")


def peak_rss_gb(run_dir: Path) -> float:
    df = pd.read_csv(run_dir / "resources.csv")
    mine = df[df["role"].isin(["generator", "harness"])]
    return float(mine.groupby("t")["rss_bytes"].sum().max()) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--engine", choices=["threadpool", "locust"], default="threadpool")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--big-lines", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2, help="generator processes of the memory run")
    parser.add_argument("--nginx-workers", default="auto")
    args = parser.parse_args(argv)
    nginx, _ = ensure_tools()
    measured = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        work = folder / "nginx"
        work.mkdir()
        server, url = start_nginx(nginx, work, args.nginx_workers)
        try:
            print(f"nginx (worker_processes {args.nginx_workers}) at {url}; {args.engine} engine, {args.users} users")
            size = write_dataset(folder / "data.jsonl", args.lines)
            print(f"dataset: {args.lines:,} distinct bodies, {size / 1e6:.1f} MB")
            fixed = scenario(folder / "fixed.yaml", args.engine, args.users, args.duration, {"payload": body(0)})
            data = scenario(folder / "data.yaml", args.engine, args.users, args.duration,
                            {"dataset": {"path": str(folder / "data.jsonl")}})
            pairs: list[tuple[float, float]] = []
            for k in range(args.rounds):
                order = [("dataset", data), ("fixed", fixed)] if k % 2 else [("fixed", fixed), ("dataset", data)]
                runs = {name: harness_run(path, folder / f"{name}-{k}", url=url) for name, path in order}
                for name, _ in order:
                    run = runs[name]
                    print(f"round {k + 1} {name:8s}: {run.figure('ok_rps') or 0:9.1f} ok req/s "
                          f"{'' if evidence(run) else '(not evidence: ' + (run.why_not or 'errors') + ')'}"
                          f"   ({run.command})")
                if evidence(runs["dataset"]) and evidence(runs["fixed"]):
                    pairs.append((runs["dataset"].figure("ok_rps") or 0.0, runs["fixed"].figure("ok_rps") or 0.0))
            if pairs:
                ratios = sorted(a / b for a, b in pairs if b)
                ratio = ratios[len(ratios) // 2]
                print(f"{args.lines:,}-line dataset ÷ one fixed body (nginx ceiling): {spread(pairs)}; "
                      f"need >= {RATIO_TARGET}: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}")
            else:
                print("dataset ÷ fixed body: not measured (no valid pair)")
                measured = False

            big = folder / "big.jsonl"
            size = write_dataset(big, args.big_lines)
            print(f"big dataset: {args.big_lines:,} lines, {size / 1e6:.0f} MB")
            path = scenario(folder / "big.yaml", args.engine, 2, 3.0, {"dataset": {"path": str(big)}},
                            processes=args.processes)
            started = time.monotonic()
            run = harness_run(path, folder / "big-run", url=url)
            wall = time.monotonic() - started
            if evidence(run) and (folder / "big-run" / "resources.csv").exists():
                gb = peak_rss_gb(folder / "big-run")
                print(f"{args.big_lines:,}-line dataset, {args.processes} generator processes: run took {wall:.1f} s "
                      f"in all (4 s of load); peak RSS harness + generators {gb:.2f} GB; need <= {RSS_TARGET_GB} GB: "
                      f"{'PASS' if gb <= RSS_TARGET_GB else 'FAIL'}   ({run.command})")
            else:
                print(f"big dataset run: not measured ({run.why_not})")
                measured = False
        finally:
            server.stop()
    return 0 if measured else 2


if __name__ == "__main__":
    sys.exit(main())
