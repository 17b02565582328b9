"""`python -m harness`: run and validate scenarios, render reports and comparisons. Exit codes:
0 passed, 1 threshold failed, 2 bad usage or input, 3 invalid run or unusable target, 130 interrupted
(partial results kept)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.durations import parse_duration
from harness.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UserError

EPILOG = """exit codes: 0 passed, 1 a threshold failed, 2 bad usage or input,
3 run invalid or target unusable, 130 interrupted (partial results kept)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", epilog=EPILOG,
                                     description="Load-test and benchmark ML inference endpoints.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write a run folder with summary.json",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", help="scenario YAML file, e.g. scenarios/spike.yaml")
    run.add_argument("--out", type=Path, help="run folder (default: reports/<timestamp>-<name>)")
    run.add_argument("--url", help="load this already-running endpoint instead of the scenario's target "
                                   "(e.g. http://127.0.0.1:9000)")
    run.add_argument("--duration", help="stretch or shrink the stages to this total (e.g. 2m); "
                                        "warm-up is scaled with them")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one scenario value, e.g. --set load.stages[1].target=64 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress line")

    ui = sub.add_parser("ui", help="start the scenario's target and Locust's web UI pointed at it")
    ui.add_argument("scenario", help="scenario YAML file (its target, payload and endpoint are used)")
    ui.add_argument("--out", type=Path, help="run folder for the samples (default: reports/<timestamp>-<name>-ui)")
    ui.add_argument("--url", help="use this already-running endpoint instead of the scenario's target")
    ui.add_argument("--web-host", default="127.0.0.1", help="address of the web UI (0.0.0.0 exposes it)")
    ui.add_argument("--web-port", type=int, default=8089, help="port of the web UI")
    ui.add_argument("--workers", type=int, default=0, help="Locust worker processes (0 = one local process)")
    ui.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one scenario value (repeatable)")

    validate = sub.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", nargs="+", help="scenario YAML file(s)")

    report = sub.add_parser("report", help="(re-)render a run folder's report.html")
    report.add_argument("run_dir", type=Path, help="run folder, e.g. reports/20261126-012201-spike")

    compare = sub.add_parser("compare", help="compare runs side by side in one HTML page (+ CSV)")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                         help="run folders or quoted globs (e.g. 'reports/*-spike'); the first is the baseline")
    compare.add_argument("-o", "--output", type=Path,
                         help="HTML file to write (default: reports/compare-<timestamp>.html); "
                              "the CSV goes next to it")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.url:
        overrides += [f"target.url={args.url}", "target.server=null"]
    return overrides


def _scaled(scenario_path: Path, args: argparse.Namespace) -> tuple[object, Path]:
    from harness.scenario import load_scenario

    scenario, path = load_scenario(scenario_path, _overrides(args))
    if args.duration:
        try:
            total = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--duration: {exc}") from None
        if total <= 0:
            raise UserError("--duration must be positive")
        factor = total / scenario.duration
        extra = [f"load.stages[{i}].duration={s.duration * factor!r}" for i, s in enumerate(scenario.load.stages)]
        extra.append(f"load.warmup={scenario.load.warmup * factor!r}")
        scenario, path = load_scenario(scenario_path, _overrides(args) + extra)
    return scenario, path


def cmd_run(args: argparse.Namespace) -> int:
    from harness import summary as summary_mod
    from harness.runner import Run, new_run_dir

    scenario, path = _scaled(Path(args.scenario), args)
    try:
        run_dir = args.out if args.out else new_run_dir(scenario.name)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {args.out or 'under reports/'}: "
                        f"{exc.strerror or exc}") from None
    result = Run(scenario, path, run_dir, quiet=args.quiet).execute()
    if "requests" in result:
        print(summary_mod.format_table(result))
    print(f"run folder: {run_dir}")
    if (run_dir / summary_mod.SUMMARY_FILE).exists():
        _report_after_run(run_dir)
    return int(result["exit_code"])


def _report_after_run(run_dir: Path) -> None:
    """Write report.html; a failure here never costs the run its summary or exit code."""
    from harness.report import write_report

    try:
        print(f"report: {write_report(run_dir)}")
    except KeyboardInterrupt:
        print(f"warning: report not written (interrupted); render it with: python -m harness report {run_dir}",
              file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a report bug must leave the run's results intact
        print(f"warning: report not written ({type(exc).__name__}: {exc}); "
              f"render it with: python -m harness report {run_dir}", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import expand_run_dirs, write_comparison

    html_path, csv_path, headline = write_comparison(expand_run_dirs(args.run_dirs), args.output)
    print(f"{headline}\ncomparison: {html_path}\ntable: {csv_path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.runner import new_run_dir
    from harness.scenario import load_scenario
    from harness.ui import serve_ui

    scenario, path = load_scenario(Path(args.scenario), _overrides(args))
    try:
        run_dir = args.out if args.out else new_run_dir(f"{scenario.name}-ui")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder: {exc.strerror or exc}") from None
    return serve_ui(scenario, path, run_dir, web_host=args.web_host, web_port=args.web_port,
                    workers=args.workers)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.scenario import load_scenario

    problems: list[str] = []
    for name in args.scenario:
        try:
            scenario, _ = load_scenario(name)
            print(f"{name}: ok ({scenario.load.model} model, {len(scenario.load.stages)} stage(s), "
                  f"{scenario.duration:g} s)")
        except UserError as exc:
            problems += exc.messages
    if problems:
        raise UserError(problems)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "ui":
            return cmd_ui(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
        return cmd_validate(args)
    except UserError as exc:
        for message in exc.messages:
            print(f"error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
