"""A/A sweeps: how often a sweep of two identical combinations wrongly names a winner.

    .venv/bin/python benchmarks/bench_sweep_aa.py [--sweeps 10] [--repeat 3] [--seconds 6]

The proof of the sweep's tie rule (issue 17). A sweep lists the same settings twice (the bundled
`sleep` model at 20 ms, 1 gthread worker x 4 threads, 4 closed-model users), so any difference
between the two "combinations" is noise; a winner named between them is wrong. Runs --sweeps such
sweeps through the CLI as a user would (`python -m harness sweep FILE --repeat N`), first with
--repeat repeats per combination (the t interval over repeats), then with one run each (the
windows' bootstrap, which sees only the noise within a run), and prints, for each way, how many
sweeps named a winner, the two figures' spread, and how long a sweep took. The target: at most 1
wrong winner in 10 sweeps with repeats.

About (2 x repeat + 2) x (--seconds + 3 s) per sweep pair: 10 sweeps at the defaults take about
12 minutes. Exit 0 when every sweep finished, 2 when one failed to measure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import harness, write_yaml  # noqa: E402


def one_sweep(scenario: Path, out: Path, repeat: int) -> dict:
    run = harness(["sweep", scenario, "--out", out, "--repeat", str(repeat)], out, timeout=900, summary=False)
    doc_path = out / "sweep.json"
    if run.exit_code != 0 or not doc_path.exists():
        raise RuntimeError(f"sweep failed (exit {run.exit_code}):\n{run.output[-3000:]}")
    return json.loads(doc_path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", type=int, default=10, help="A/A sweeps per way")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per combination in the first way")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds of each run (after 1 s warm-up)")
    args = parser.parse_args(argv)
    ways = [(f"repeat {args.repeat} (t interval over repeats)", args.repeat),
            ("one run each (bootstrap of 1 s windows)", 1)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_sweep_aa-") as name:
        tmp = Path(name)
        scenario = write_yaml(tmp / "aa.yaml", {
            "name": "aa",
            "target": {"server": {"model": "sleep", "worker_class": "gthread", "threads": 4}},
            "load": {"model": "closed", "start": 4, "stages": [{"duration": f"{args.seconds + 1:g}s", "target": 4}],
                     "warmup": "1s"},
            "sweep": {"server": {"sleep_ms": [20, 20]}, "rank_by": "ok_rps"}})
        for label, repeat in ways:
            winners, gaps, took = 0, [], []
            for k in range(1, args.sweeps + 1):
                started = time.monotonic()
                try:
                    doc = one_sweep(scenario, tmp / f"r{repeat}-{k}", repeat)
                except RuntimeError as exc:
                    print(f"FAILED TO MEASURE: {exc}", file=sys.stderr)
                    return 2
                took.append(time.monotonic() - started)
                a, b = (r["figure"] for r in doc["ranking"][:2])
                gaps.append(abs(a - b) / min(a, b))
                named = doc["winner_label"] is not None
                winners += named
                print(f"  {label}, sweep {k:>2}: {'WINNER NAMED (wrong)' if named else 'tied':<20} "
                      f"ok_rps {a:.1f} vs {b:.1f} ({gaps[-1]:.1%} apart)", flush=True)
            results.append((label, winners, statistics.median(gaps), max(gaps), statistics.median(took)))
    print()
    print(f"A/A sweeps: the same settings twice (sleep 20 ms, 4 threads, 4 users, {args.seconds:g} s measured)")
    print(f"{'way':<42} {'wrong winners':>14} {'gap p50':>8} {'gap max':>8} {'s/sweep':>8}")
    for label, winners, gap50, gapmax, seconds in results:
        print(f"{label:<42} {f'{winners} of {args.sweeps}':>14} {gap50:>8.1%} {gapmax:>8.1%} {seconds:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
