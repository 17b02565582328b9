"""Prove the regression gate: an A/A experiment (false-alarm rate) and a 30% slowdown (detection rate).

    .venv/bin/python benchmarks/bench_gate.py [--checks 20] [--scenario scenarios/gate-sleep.yaml]

One baseline run of the gate scenario, then `--checks` pairs of runs on this machine, interleaved
so that machine drift hits both alike: an A run (the same code and settings: any regression verdict
is a false alarm) and a B run with the sleep model made 30% slower (sleep_ms x 1.3: every check
should flag it). Each run is judged by `python -m harness check`'s logic against the baseline, with
the scenario's `check:` tolerances, following the protocol the README recommends for CI: a
regression is confirmed by measuring once more and checking that second run too (a shared machine
has bursts of load from other jobs that can slow one run by 2x; they rarely hit two in a row).
Prints the single-check and confirmed rates; exit 1 when the confirmed targets (at most 1 false
alarm in 20, every slowdown caught) are missed. Run folders go to reports/bench-gate-<timestamp>/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.workflows.gate import run_check  # noqa: E402
from harness.run.runner import REPORTS_DIR, Run  # noqa: E402
from harness.scenario.schema import load_scenario  # noqa: E402


def measure(scenario_path: Path, out: Path, overrides: list[str]) -> Path:
    scenario, path = load_scenario(scenario_path, overrides)
    out.mkdir(parents=True)
    summary = Run(scenario, path, out, quiet=True).execute()
    if summary.get("interrupted"):
        raise KeyboardInterrupt
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20, help="A/A checks and slowdown checks (each)")
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "gate-sleep.yaml")
    parser.add_argument("--slowdown", type=float, default=1.3, help="factor applied to sleep_ms in B runs")
    args = parser.parse_args()

    base_scenario, _ = load_scenario(args.scenario)
    sleep_ms = base_scenario.target.server.sleep_ms if base_scenario.target.server else 20.0
    slow = [f"target.server.sleep_ms={sleep_ms * args.slowdown:g}"]
    folder = REPORTS_DIR / f"bench-gate-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.monotonic()
    baseline = measure(args.scenario, folder / "baseline", [])
    counts = {"a_single": 0, "a_confirmed": 0, "b_single": 0, "b_confirmed": 0, "invalid": 0}

    def gate(kind: str, i: int, overrides: list[str]) -> tuple[dict, bool]:
        """One check, and its confirmation by a second run when it says regression."""
        first = run_check([measure(args.scenario, folder / f"{kind}{i:02d}", overrides)], [baseline], [])
        counts["invalid"] += first["verdict"] == "invalid"
        if first["verdict"] != "regression":
            return first, False
        counts[f"{kind}_single"] += 1
        again = run_check([measure(args.scenario, folder / f"{kind}{i:02d}-confirm", overrides)], [baseline], [])
        counts["invalid"] += again["verdict"] == "invalid"
        confirmed = again["verdict"] == "regression"
        counts[f"{kind}_confirmed"] += confirmed
        return first, confirmed

    print(f"baseline: {baseline}; {args.checks} A/A checks and {args.checks} checks of sleep_ms "
          f"{sleep_ms:g} -> {sleep_ms * args.slowdown:g}")
    print(f"{'#':>3}  {'A/A verdict':<12} {'p95 ratio [CI]':<24} {'rps ratio [CI]':<24}  "
          f"{'slowdown verdict':<16} {'p95 ratio':<10} {'rps ratio':<10}")
    for i in range(1, args.checks + 1):
        same, same_confirmed = gate("a", i, [])
        slower, slower_confirmed = gate("b", i, slow)
        figures = {m["metric"]: m for m in same["metrics"]}
        slow_figures = {m["metric"]: m for m in slower["metrics"]}

        def ci(m: dict) -> str:
            return f"{m['ratio']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m["ratio"] else "-"

        a_text = same["verdict"] + (" (confirmed)" if same_confirmed else " (not confirmed)"
                                    if same["verdict"] == "regression" else "")
        b_text = slower["verdict"] + (" (confirmed)" if slower_confirmed else "")
        print(f"{i:>3}  {a_text:<12} {ci(figures['p95']):<24} {ci(figures['rps']):<24}  "
              f"{b_text:<16} {slow_figures['p95']['ratio'] or 0:<10.3f} "
              f"{slow_figures['rps']['ratio'] or 0:<10.3f}", flush=True)
    n = args.checks
    print(f"\nA/A false alarms: single check {counts['a_single']}/{n}, confirmed by a second run "
          f"{counts['a_confirmed']}/{n} ({counts['a_confirmed'] / n:.0%}); target at most {max(1, n // 20)} in {n}")
    print(f"slowdown x{args.slowdown:g} detected: single check {counts['b_single']}/{n}, confirmed "
          f"{counts['b_confirmed']}/{n} ({counts['b_confirmed'] / n:.0%}); target {n}/{n}")
    if counts["invalid"]:
        print(f"invalid runs (no evidence either way): {counts['invalid']}")
    print(f"runs in {time.monotonic() - started:.0f} s; run folders: {folder}")
    return 0 if counts["a_confirmed"] <= max(1, n // 20) and counts["b_confirmed"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
