"""`python -m harness`: run and validate scenarios, render reports and comparisons. Exit codes:
0 passed, 1 threshold failed, 2 bad usage or input, 3 invalid run or unusable target, 130 interrupted
(partial results kept)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.scenario.units import parse_duration
from harness.errors import EXIT_INTERRUPTED, EXIT_INVALID_RUN, UserError

if TYPE_CHECKING:
    from harness.scenario.schema import Scenario

EPILOG = """exit codes: 0 passed, 1 a threshold failed, 2 bad usage or input,
3 run invalid or target unusable, 130 interrupted (partial results kept)"""


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
                                   "(e.g. http://127.0.0.1:9000)")
    run.add_argument("--duration", help="stretch or shrink the stages to this total (e.g. 2m); "
                                        "warm-up is scaled with them")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one scenario value, e.g. --set load.stages[1].target=64 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--repeat", type=int, metavar="N",
                     help="measure N times, each in RUN_DIR/repeat-K (the scenario's `repeat:`)")

    ui = sub.add_parser("ui", help="start the scenario's target and Locust's web UI pointed at it")
    ui.add_argument("scenario", help="scenario YAML file (its target, payload and endpoint are used)")
    ui.set_defaults(repeat=None)
    ui.add_argument("--out", type=Path, help="run folder for the samples (default: reports/<timestamp>-<name>-ui)")
    ui.add_argument("--url", help="use this already-running endpoint instead of the scenario's target")
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
    capacity = sub.add_parser("capacity", help="find the highest arrival rate meeting the scenario's capacity SLO",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    capacity.add_argument("scenario", help="scenario YAML file with a capacity: block")
    capacity.add_argument("--out", type=Path, help="capacity folder (default: reports/capacity-<name>-<timestamp>)")
    capacity.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override one scenario value (repeatable)")
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.run.runner import REPORTS_DIR
    from harness.scenario.schema import load_scenario
    from harness.workflows.sweep import print_ranking, run_sweep

    scenario, path = load_scenario(Path(args.scenario), args.overrides)
    sweep_dir = args.out or REPORTS_DIR / f"sweep-{scenario.name}"

    def measure(one: Any, one_path: Path, folder: Path) -> dict[str, Any]:
        if one.capacity is not None:
            from harness.workflows.capacity import search_capacity

            return search_capacity(one_path, args.overrides + [f"target.server={_json(one.target.server)}"],
                                   folder, _probe)
        return _probe(one, one_path, folder)

    code, doc = run_sweep(path, args.overrides, sweep_dir, measure)
    if doc:
        print_ranking(doc)
        print(f"sweep folder: {sweep_dir}")
        if "page" in doc:
            print(f"comparison: {doc['page']}")
    return code


def _json(settings: Any) -> str:
    import json

    return json.dumps(settings.model_dump())


def _probe(scenario: Any, path: Path, run_dir: Path) -> dict[str, Any]:
    from harness.run.runner import Run

    return Run(scenario, path, run_dir, quiet=True).execute()


def cmd_capacity(args: argparse.Namespace) -> int:
    from harness.workflows.capacity import search_capacity
    from harness.run.runner import REPORTS_DIR
    from harness.scenario.schema import load_scenario

    scenario, path = load_scenario(Path(args.scenario), args.overrides)
    folder = args.out or REPORTS_DIR / f"capacity-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"capacity search: {scenario.name}; folder {folder}")
    result = search_capacity(path, args.overrides, folder, _probe)
    if result["interrupted"]:
        return EXIT_INTERRUPTED
    if result["capacity_rps"] is not None:
        uncertainty = f" ({result['uncertainty']})" if result["uncertainty"] else ""
        print(f"capacity: {result['capacity_rps']:.6g} req/s{uncertainty}")
    for note in result["notes"]:
        print(f"note: {note}")
    if "page" in result:
        print(f"chart: {result['page']}")
    return 0 if result["capacity_rps"] is not None else EXIT_INVALID_RUN


def cmd_check(args: argparse.Namespace) -> int:
    from harness.workflows.gate import format_table, run_check, write_outputs

    verdict = run_check(args.run_dirs, args.baseline, args.overrides, args.calibration,
                        args.baseline_calibration)
    print(format_table(verdict))
    for path in write_outputs(verdict, args.junit, args.json):
        print(f"wrote {path}")
    return int(verdict["exit_code"])


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.repeat is not None:
        overrides.append(f"repeat={args.repeat}")
    if args.url:
        overrides += [f"target.url={args.url}", "target.server=null"]
    return overrides


def _scaled(scenario_path: Path, args: argparse.Namespace) -> tuple[object, Path]:
    from harness.scenario.schema import load_scenario

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
    from harness.results import summary as summary_mod
    from harness.run.runner import Run, new_run_dir

    scenario, path = _scaled(Path(args.scenario), args)
    try:
        run_dir = args.out if args.out else new_run_dir(scenario.name)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {args.out or 'under reports/'}: "
                        f"{exc.strerror or exc}") from None
    if scenario.repeat > 1:
        return _run_repeated(scenario, path, run_dir, args.quiet)
    result = Run(scenario, path, run_dir, quiet=args.quiet).execute()
    if "requests" in result:
        print(summary_mod.format_table(result))
    print(f"run folder: {run_dir}")
    if (run_dir / summary_mod.SUMMARY_FILE).exists():
        _report_after_run(run_dir)
    return int(result["exit_code"])


def _run_repeated(scenario: Scenario, path: Path, run_dir: Path, quiet: bool) -> int:
    """`repeat: N`: N complete runs in RUN_DIR/repeat-K, then the spread between them."""
    from harness.workflows import repeats
    from harness.results import summary as summary_mod
    from harness.run.runner import Run

    once = scenario.model_copy(update={"repeat": 1})  # each repeat folder's scenario.yaml runs once

    def one(folder: Path) -> dict[str, Any]:
        result = Run(once, path, folder, quiet=quiet).execute()
        if "requests" in result:
            print(f"{folder.name}: {result['rps']:.1f} req/s, p95 {result['latency_ms']['p95']:.2f} ms, "
                  f"errors {result['errors']}, exit {result['exit_code']}", flush=True)
        if (folder / summary_mod.SUMMARY_FILE).exists() and not _report_after_run(folder):
            return {**result, "interrupted": True}  # Ctrl-C while its report rendered: stop repeating
        return result

    doc = repeats.run_repeats(scenario.repeat, run_dir, one, lambda text: print(text, file=sys.stderr, flush=True))
    if doc["repeats"]:
        print(repeats.format_table(doc))
    print(f"run folder: {run_dir} ({doc['completed']} of {doc['planned']} repeats complete; "
          f"{repeats.REPEATS_FILE})")
    return int(doc["exit_code"])


def _report_after_run(run_dir: Path) -> bool:
    """Write report.html; a failure here never costs the run its summary or exit code.

    Returns False when Ctrl-C interrupted the rendering (the caller should stop there)."""
    from harness.report.run_page import write_report

    try:
        print(f"report: {write_report(run_dir)}")
    except KeyboardInterrupt:
        print(f"warning: report not written (interrupted); render it with: python -m harness report {run_dir}",
              file=sys.stderr)
        return False
    except Exception as exc:  # noqa: BLE001 - a report bug must leave the run's results intact
        print(f"warning: report not written ({type(exc).__name__}: {exc}); "
              f"render it with: python -m harness report {run_dir}", file=sys.stderr)
    return True


def cmd_report(args: argparse.Namespace) -> int:
    from harness.run.recover import rebuild_summary
    from harness.workflows.repeats import repeat_dirs
    from harness.report.run_page import write_report
    from harness.results.summary import SUMMARY_FILE

    for run_dir in repeat_dirs(args.run_dir) or [args.run_dir]:  # a repeated run: one report per repeat
        if run_dir.is_dir() and not (run_dir / SUMMARY_FILE).exists():
            rebuild_summary(run_dir)
            print(f"{run_dir}: no summary.json (the run was killed?); rebuilt one from the samples, "
                  "marked partial", file=sys.stderr)
        print(f"report: {write_report(run_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import expand_run_dirs, write_comparison

    html_path, csv_path, headline = write_comparison(expand_run_dirs(args.run_dirs), args.output)
    print(f"{headline}\ncomparison: {html_path}\ntable: {csv_path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.run.runner import new_run_dir
    from harness.scenario.schema import load_scenario
    from harness.run.ui import serve_ui

    scenario, path = load_scenario(Path(args.scenario), _overrides(args))
    try:
        run_dir = args.out if args.out else new_run_dir(f"{scenario.name}-ui")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder: {exc.strerror or exc}") from None
    return serve_ui(scenario, path, run_dir, web_host=args.web_host, web_port=args.web_port,
                    workers=args.workers)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.scenario.schema import load_scenario

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
        if args.command == "check":
            return cmd_check(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "capacity":
            return cmd_capacity(args)
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
