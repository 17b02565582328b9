"""Does the harness's memory stay flat on a long run at the highest rate this machine can generate?

    .venv/bin/python benchmarks/bench_memory.py [--minutes 10] [--keep]

Runs `python -m harness run` for `--minutes` against nginx returning a fixed JSON body on
loopback (the cheapest target there is, so the generator, not the server, sets the rate), closed
model, 2 generator processes x 8 users (the ceiling configuration of bench_harness.py). The
harness's own resource monitor samples every process every 0.5 s into resources.csv; from it this
script prints the RSS series minute by minute for the harness process and its generator processes
and the growth: mean RSS of the last 30 s minus mean RSS of 30–60 s into the run (the first
30 s are start-up: imports, thread stacks, buffers filling). Target (issue 7): the whole harness
(main process + generators) grows by less than 50 MB.

The run writes about 50 bytes per request to disk (tens of millions of rows in 10 minutes); the
run folder is deleted afterwards unless --keep. nginx-light is installed with apt-get when
missing, and nginx is always stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import ensure_tools, start_nginx  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LIMIT_MB = 50.0
SCENARIO = """\
# the highest closed-model rate on this machine, for a long time
name: memory-soak
target: {{endpoint: /, method: GET, timeout: 5s, scrape_metrics: false}}
generator: {{processes: 2}}
load:
  model: closed
  start: 16
  stages: [{{duration: {seconds}s, target: 16}}]
  warmup: 0s
"""


def rss_series(resources: Path) -> pd.DataFrame:
    """RSS in MB per 0.5 s tick: the harness process, its generator processes (summed), both."""
    df = pd.read_csv(resources)
    df = df[df["role"].isin(["harness", "generator"])]
    table = df.pivot_table(index="t", columns="role", values="rss_bytes", aggfunc="sum").dropna() / 2**20
    table["total"] = table["harness"] + table["generator"]
    return table


def growth(series: pd.DataFrame, column: str, duration: float) -> float:
    early = series.loc[(series.index >= 30) & (series.index < 60), column].mean()
    late = series.loc[series.index >= duration - 30, column].mean()
    return float(late - early)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    if seconds < 90:
        parser.error("--minutes must cover at least 1.5 minutes (growth compares 30-60 s with the last 30 s)")
    nginx_bin, _ = ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    nginx = None
    try:
        (work / "nginx").mkdir()
        nginx, url = start_nginx(nginx_bin, work / "nginx", "auto")
        scenario = work / "memory-soak.yaml"
        scenario.write_text(SCENARIO.format(seconds=seconds))
        out = work / "run"
        cmd = [sys.executable, "-m", "harness", "run", str(scenario), "--url", url, "--out", str(out), "--quiet"]
        print(f"running {seconds} s against nginx ({url}): python -m harness run memory-soak.yaml --url ...",
              flush=True)
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 1800)
        if not (out / "summary.json").exists():
            print(f"the harness run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        summary = json.loads((out / "summary.json").read_text())
        series = rss_series(out / "resources.csv")
        disk = sum(p.stat().st_size for p in out.glob("samples-*.csv"))
        print(f"run took {time.monotonic() - started:.0f} s (incl. the summary); {summary['requests']:,} requests, "
              f"{summary['rps']:,.0f} req/s, errors {summary['errors']}, valid {summary['valid']}; "
              f"samples on disk {disk / 2**20:,.0f} MB ({disk / max(summary['requests'], 1):.1f} B/request)")
        print("\n     t   harness MB   generators MB   total MB")
        rows = [series[series.index >= mark].head(1) for mark in [0, 30, 60, *range(120, seconds, 60)]]
        for row in [r for r in rows if not r.empty] + [series.tail(1)]:
            print(f"{row.index[0]:6.0f}   {row['harness'].iloc[0]:10.1f}   {row['generator'].iloc[0]:13.1f}"
                  f"   {row['total'].iloc[0]:8.1f}")
        print()
        for column in ("harness", "generator", "total"):
            grew = growth(series, column, seconds)
            print(f"RSS growth ({column}, mean of the last 30 s - mean of 30-60 s): {grew:+.1f} MB")
        total = growth(series, "total", seconds)
        print(f"\nwhole harness: {total:+.1f} MB over {seconds / 60:g} min (target < {LIMIT_MB:g} MB): "
              f"{'PASS' if total < LIMIT_MB else 'FAIL'}")
        if args.keep:
            kept = REPO / "reports" / f"bench-memory-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(out, kept)
            print(f"run folder kept: {kept}")
        return 0 if total < LIMIT_MB else 1
    finally:
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
