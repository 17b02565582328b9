"""Measure the regression gate as CI runs it, and the A/A interval of repeats.

    .venv/bin/python benchmarks/bench_gate.py [--noise 6] [--slow 2] [--quick]
    .venv/bin/python benchmarks/bench_gate.py --mode repeats [--repeats 3] [--quick]

Mode `gate` (default) repeats what `.ci/run` does, command for command:

    python -m harness run scenarios/gate-sleep.yaml --out RUN --quiet
    python -m harness check RUN --baseline benchmarks/baselines/gate-sleep \
        --check p95_may_rise=20% --check rps_may_fall=10% --json RUN/gate.json

with CI's protocol: a run exiting non-zero gives the gate that exit code; on exit 1 (regression)
the gate is run once more and its second exit code is the verdict. It judges against the
COMMITTED baseline with CI's tolerances (both changeable: --baseline, --check). `--noise` gates
of the unchanged scenario (every failure is a false alarm) are interleaved with `--slow` gates of
the scenario slowed by 30% (`--set target.server.sleep_ms=26`, i.e. sleep_ms x --slowdown: every
pass is a missed regression), so machine drift hits both alike. Per gate it prints the p95 and
successful-req/s ratios with their confidence intervals and the exit code of each check; then
"noise: K/N passed" and "slowdown x1.3: K/M failed", single check and after confirmation. These
are the figures behind the README's "noise passes, a 30% slowdown fails". Each gate takes ~15 s
(one more run when it confirms); --quick is --noise 3 --slow 2 (~1.5-2 min).

Mode `repeats` measures the A/A interval of the README ("three A/A repeats of smoke.yaml gave a
req/s interval of [...]"): `harness run scenarios/smoke.yaml --repeat N` twice (A, then B), then
`harness check B/repeat-1..k --baseline A/repeat-1..k` for k = 1..N (the two-stage bootstrap
over the first k repeats of each side). Prints, per k, the req/s and p95 ratio and its interval
and the gate's method: how wide the gate's interval is when nothing changed, and how it narrows
with more repeats. (smoke.yaml measures 3 s, fewer than 5 one-second windows, so k = 1 falls back
to comparing the stored figures: a zero-width "interval"; with k >= 2 the runs are resampled.)
--quick is --repeats 2.

Run folders go to reports/bench-gate-<timestamp>/ (kept for inspection). Every process is started
through bench_tools (own process group, torn down on every path). Exit 0 when the figures were
measured (whatever the gate said), 2 when they could not be (a command failed for another reason
than a verdict, or every gate of one kind was invalid).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tools import REPO, harness  # noqa: E402

CI_CHECKS = ["p95_may_rise=20%", "rps_may_fall=10%"]  # .ci/run's tolerances
VERDICT = {0: "pass", 1: "REGRESSION", 3: "invalid"}


class Unmeasured(Exception):
    pass


@dataclass
class Check:
    """One `harness run` + `harness check` of CI's gate function."""

    run_exit: int
    check_exit: int | None  # None when the run itself failed (CI returns the run's code)
    figures: dict[str, dict]

    @property
    def code(self) -> int:
        return self.run_exit if self.check_exit is None else self.check_exit

    def text(self) -> str:
        def ci(name: str) -> str:
            m = self.figures.get(name)
            if not m or m.get("ratio") is None:
                return "-"
            return f"{m['ratio']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"

        what = f"run exit {self.run_exit}" if self.check_exit is None else f"check exit {self.check_exit}"
        return f"p95 {ci('p95'):<22} ok req/s {ci('rps'):<22} {what} ({VERDICT.get(self.code, 'error')})"


def gate_once(args: argparse.Namespace, out: Path, sets: list[str]) -> Check:
    """CI's gate(): run the scenario, then check it against the baseline with CI's tolerances."""
    run_args: list[object] = ["run", args.scenario, "--out", out, "--quiet"]
    for item in sets:
        run_args += ["--set", item]
    run = harness(run_args, out, timeout=300)
    if run.exit_code != 0:
        if run.exit_code not in (1, 3):
            raise Unmeasured(f"`{run.command}` exited {run.exit_code}:\n{run.output[-3000:]}")
        return Check(run.exit_code, None, {})
    check_args: list[object] = ["check", out, "--baseline", args.baseline, "--json", out / "gate.json"]
    for item in args.checks:
        check_args += ["--check", item]
    check = harness(check_args, out, timeout=120, summary=False)
    if check.exit_code not in (0, 1, 3):
        raise Unmeasured(f"`{check.command}` exited {check.exit_code}:\n{check.output[-3000:]}")
    verdict = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
    return Check(0, check.exit_code, {m["metric"]: m for m in verdict.get("metrics", [])})


def gate_mode(args: argparse.Namespace, folder: Path) -> int:
    scenario = yaml.safe_load(Path(args.scenario).read_text())
    sleep_ms = float(((scenario.get("target") or {}).get("server") or {}).get("sleep_ms", 20.0))
    slow_sets = [f"target.server.sleep_ms={sleep_ms * args.slowdown:g}"]
    print(f"gate as .ci/run runs it: baseline {args.baseline}, tolerances {' '.join(args.checks) or '(scenario)'}, "
          f"confirmation on exit 1; {args.noise} noise gates and {args.slow} gates with sleep_ms "
          f"{sleep_ms:g} -> {sleep_ms * args.slowdown:g}, interleaved", flush=True)
    results: dict[str, list[tuple[Check, Check | None]]] = {"noise": [], "slow": []}
    order = [kind for i in range(max(args.noise, args.slow))
             for kind, n in (("noise", args.noise), ("slow", args.slow)) if i < n]
    for kind in order:
        i = len(results[kind]) + 1
        sets = slow_sets if kind == "slow" else []
        first = gate_once(args, folder / f"{kind}-{i:02d}", sets)
        print(f"  {kind:<5} {i:>2}: {first.text()}", flush=True)
        again = None
        if first.code == 1:
            again = gate_once(args, folder / f"{kind}-{i:02d}-confirm", sets)
            print(f"  {'':<5} {'':>2}  confirm: {again.text()}", flush=True)
        results[kind].append((first, again))

    def final(pair: tuple[Check, Check | None]) -> int:
        return pair[1].code if pair[1] is not None else pair[0].code

    noise, slow = results["noise"], results["slow"]
    n_ok = sum(final(p) == 0 for p in noise)
    n_single = sum(p[0].code == 0 for p in noise)
    n_invalid = sum(final(p) == 3 for p in noise)
    s_fail = sum(final(p) == 1 for p in slow)
    s_single = sum(p[0].code == 1 for p in slow)
    s_invalid = sum(final(p) == 3 for p in slow)
    print(f"\nnoise (unchanged code): {n_ok}/{len(noise)} passed the gate after CI's confirmation run "
          f"(single check: {n_single}/{len(noise)} passed){f'; {n_invalid} invalid (exit 3)' if n_invalid else ''}")
    print(f"slowdown x{args.slowdown:g} (sleep_ms {sleep_ms:g} -> {sleep_ms * args.slowdown:g}): {s_fail}/{len(slow)} "
          f"failed the gate after confirmation (single check: {s_single}/{len(slow)} failed)"
          f"{f'; {s_invalid} invalid (exit 3)' if s_invalid else ''}")
    ratios = [(kind, m) for kind, pairs in results.items() for first, _ in pairs
              for name, m in first.figures.items() if name in ("p95", "rps") and m.get("ratio") is not None]
    for kind in ("noise", "slow"):
        for name in ("p95", "rps"):
            got = [m["ratio"] for k, m in ratios if k == kind and m["metric"] == name]
            if got:
                print(f"  {kind} {name} ratios vs the committed baseline (first checks): {min(got):.3f}..{max(got):.3f}")
    if (noise and n_invalid == len(noise)) or (slow and s_invalid == len(slow)):
        print("FAILED TO MEASURE: every gate of one kind was invalid", file=sys.stderr)
        return 2
    return 0


def repeats_mode(args: argparse.Namespace, folder: Path) -> int:
    n = args.repeats
    print(f"A/A repeats: {args.repeat_scenario} --repeat {n}, twice; check B's first k repeats against A's", flush=True)
    sides = {}
    for side in ("A", "B"):
        out = folder / f"repeats-{side}"
        run = harness(["run", args.repeat_scenario, "--out", out, "--quiet", "--repeat", n], out, timeout=600,
                      summary=False)
        print(f"  $ {run.command}: exit {run.exit_code}", flush=True)
        if run.exit_code not in (0, 1):
            raise Unmeasured(f"{side} exited {run.exit_code}:\n{run.output[-3000:]}")
        for j in range(1, n + 1):
            path = out / f"repeat-{j}" / "summary.json"
            if not path.exists():
                raise Unmeasured(f"{path} is missing:\n{run.output[-3000:]}")
            s = json.loads(path.read_text())
            print(f"    repeat-{j}: {s.get('ok_rps') or 0:.0f} ok req/s, p95 {s['latency_ms']['p95']:.2f} ms, "
                  f"valid {s.get('valid')}", flush=True)
        sides[side] = out
    print(f"\n{'repeats per side':<17} {'ok req/s ratio [95% CI]':<28} {'p95 ratio [95% CI]':<28} check exit")
    for k in range(1, n + 1):
        out = folder / f"check-{k}"
        out.mkdir()
        cmd: list[object] = ["check"] + [sides["B"] / f"repeat-{j}" for j in range(1, k + 1)]
        for j in range(1, k + 1):
            cmd += ["--baseline", sides["A"] / f"repeat-{j}"]
        cmd += ["--json", out / "gate.json"]
        check = harness(cmd, out, timeout=120, summary=False)
        if check.exit_code not in (0, 1, 3) or not (out / "gate.json").exists():
            raise Unmeasured(f"`{check.command}` exited {check.exit_code}:\n{check.output[-3000:]}")
        metrics = {m["metric"]: m for m in json.loads((out / "gate.json").read_text())["metrics"]}

        def ci(name: str) -> str:
            m = metrics.get(name) or {}
            return "-" if m.get("ratio") is None else f"{m['ratio']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"

        method = (metrics.get("rps") or {}).get("method") or "-"
        print(f"{k:<17} {ci('rps'):<28} {ci('p95'):<28} {check.exit_code} ({VERDICT.get(check.exit_code)})"
              f"  method: {method}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("gate", "repeats"), default="gate")
    parser.add_argument("--noise", type=int, default=6, help="gates of the unchanged scenario")
    parser.add_argument("--slow", type=int, default=2, help="gates of the slowed scenario")
    parser.add_argument("--slowdown", type=float, default=1.3, help="factor applied to sleep_ms in slow gates")
    parser.add_argument("--scenario", default="scenarios/gate-sleep.yaml")
    parser.add_argument("--baseline", default="benchmarks/baselines/gate-sleep", help="CI's committed baseline")
    parser.add_argument("--check", dest="checks", action="append", metavar="KEY=VALUE",
                        help=f"tolerance (repeatable); default CI's: {' '.join(CI_CHECKS)}")
    parser.add_argument("--scenario-tolerances", action="store_true",
                        help="judge with the scenario's own check: block instead of CI's tolerances")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per side (--mode repeats)")
    parser.add_argument("--repeat-scenario", default="scenarios/smoke.yaml")
    parser.add_argument("--quick", action="store_true", help="gate: --noise 3 --slow 2; repeats: --repeats 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.noise, args.slow, args.repeats = 3, 2, 2
    args.checks = [] if args.scenario_tolerances else (args.checks or CI_CHECKS)
    folder = REPO / "reports" / f"bench-gate-{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    started = time.monotonic()
    try:
        code = gate_mode(args, folder) if args.mode == "gate" else repeats_mode(args, folder)
    except (Unmeasured, TimeoutError, RuntimeError) as exc:
        print(f"FAILED TO MEASURE: {exc}", file=sys.stderr)
        return 2
    print(f"measured in {time.monotonic() - started:.0f} s; run folders: {folder}")
    return code


if __name__ == "__main__":
    sys.exit(main())
