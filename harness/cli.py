"""`python -m harness`: run and validate scenarios, render reports and comparisons. Exit codes:
0 passed, 1 threshold failed, 2 bad usage or input, 3 invalid run or unusable target, 130 interrupted
(partial results kept)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_INTERRUPTED, UserError

EPILOG = """exit codes: 0 passed, 1 a threshold failed, 2 bad usage or input,
3 run invalid or target unusable, 130 interrupted (partial results kept)"""
INSECURE_HELP = "https: do not check the server's certificate (target.tls.verify: false)"


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0-65535")
    return port


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
                                   "(e.g. http://127.0.0.1:9000 or https://HOST/base/path)")
    run.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    run.add_argument("--duration", help="stretch or shrink the stages to this total (e.g. 2m); "
                                        "warm-up is scaled with them")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one scenario value, e.g. --set load.stages[1].target=64 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="serve the run's live figures for Prometheus on 127.0.0.1:PORT/metrics "
                          "(the scenario's `metrics_port:`)")
    run.add_argument("--repeat", type=int, metavar="N",
                     help="measure N times, each in RUN_DIR/repeat-K (the scenario's `repeat:`)")

    ui = sub.add_parser("ui", help="start the scenario's target and Locust's web UI pointed at it")
    ui.add_argument("scenario", help="scenario YAML file (its target, payload and endpoint are used)")
    ui.set_defaults(repeat=None)
    ui.add_argument("--out", type=Path, help="run folder for the samples (default: reports/<timestamp>-<name>-ui)")
    ui.add_argument("--url", help="use this already-running endpoint instead of the scenario's target")
    ui.add_argument("--insecure", action="store_true", help=INSECURE_HELP)
    ui.add_argument("--web-host", default="127.0.0.1",
                    help="address of the web UI (0.0.0.0 exposes it; HARNESS_WEB_AUTH=USER:PASSWORD in the "
                         "environment requires that login)")
    ui.add_argument("--web-port", type=port_number, default=None,
                    help="port of the web UI (default: 8089, or any free port when 8089 is taken)")
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
    check = sub.add_parser("check", help="regression gate: compare a run with a baseline, exit 1 on regression",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                       help="the run folder(s) to judge (repeats are pooled)")
    check.add_argument("--baseline", action="append", type=Path, required=True,
                       help="baseline run folder or summary.json (repeatable: repeats are pooled)")
    check.add_argument("--check", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a tolerance of the scenario's check: block, e.g. p95_may_rise=15%%")
    check.add_argument("--calibration", type=Path, help="calibration run measured in this job (normalises)")
    check.add_argument("--baseline-calibration", type=Path, help="calibration run measured with the baseline")
    check.add_argument("--junit", type=Path, help="write the verdict as JUnit XML")
    check.add_argument("--json", type=Path, help="write the verdict as JSON")
    sweep = sub.add_parser("sweep", help="run every combination of a scenario's sweep: matrix and rank them",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("scenario", help="scenario YAML file with a sweep: block, e.g. scenarios/sweep-mlp-serving.yaml")
    sweep.add_argument("--out", type=Path, help="sweep folder (default: reports/sweep-<name>; rerunning resumes)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one scenario value for every combination (repeatable)")
    sweep.add_argument("--repeat", type=int, metavar="N",
                       help="measure every combination N times, interleaved (default: sweep.repeat, 1); a "
                            "winner is declared only when its interval clears the runner-up's")
    capacity = sub.add_parser("capacity", help="find the highest arrival rate meeting the scenario's capacity SLO",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    capacity.add_argument("scenario", help="scenario YAML file with a capacity: block")
    capacity.add_argument("--out", type=Path, help="capacity folder (default: reports/capacity-<name>-<timestamp>)")
    capacity.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override one scenario value (repeatable)")
    return parser


def tls_overrides(args: argparse.Namespace) -> list[str]:
    """`--insecure` as the override it stands for (after the `--set`s, so it wins)."""
    return ["target.tls.verify=false"] if args.insecure else []


def cmd_run(args: argparse.Namespace) -> int:
    from harness.workflows.single import load_scaled, run_command, run_overrides

    overrides = run_overrides(args.overrides, args.url, args.repeat) + tls_overrides(args)
    if args.metrics_port is not None:
        overrides.append(f"metrics_port={args.metrics_port}")
    scenario, path = load_scaled(Path(args.scenario), overrides, args.duration)
    return run_command(scenario, path, args.out, args.quiet)


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.run.ui import serve_ui
    from harness.scenario.loading import load_scenario
    from harness.workflows.single import make_run_dir, run_overrides

    scenario, path = load_scenario(Path(args.scenario), run_overrides(args.overrides, args.url) + tls_overrides(args))
    run_dir = make_run_dir(args.out, f"{scenario.name}-ui")
    return serve_ui(scenario, path, run_dir, web_host=args.web_host, web_port=args.web_port, workers=args.workers)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.workflows.single import validate_command

    return validate_command(args.scenario)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.workflows.single import report_command

    return report_command(args.run_dir)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import compare_command

    return compare_command(args.run_dirs, args.output)


def cmd_check(args: argparse.Namespace) -> int:
    from harness.workflows.gate import check_command

    return check_command(args.run_dirs, args.baseline, args.overrides, args.calibration,
                         args.baseline_calibration, args.junit, args.json)


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.workflows.sweep import sweep_command

    repeat = [] if args.repeat is None else [f"sweep.repeat={args.repeat}"]
    return sweep_command(Path(args.scenario), args.overrides + repeat, args.out)


def cmd_capacity(args: argparse.Namespace) -> int:
    from harness.workflows.capacity import capacity_command

    return capacity_command(Path(args.scenario), args.overrides, args.out)


COMMANDS = {"run": cmd_run, "ui": cmd_ui, "validate": cmd_validate, "report": cmd_report, "compare": cmd_compare,
            "check": cmd_check, "sweep": cmd_sweep, "capacity": cmd_capacity}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        for message in exc.messages:
            print(f"error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
