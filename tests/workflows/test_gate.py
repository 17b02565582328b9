"""The regression gate on synthetic run folders: known regressions caught, equal runs pass, outputs."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

from harness import cli
from harness.errors import UserError
from harness.results.layout import expand_repeats
from harness.workflows import gate
from tests.support import ROOT
from tests.support.cli import assert_all_gone, harness
from tests.support.fake_runs import fake_run


def verdict_of(run: Path, base: Path, *overrides: str) -> dict:
    return gate.run_check([run], [base], list(overrides))


def test_equal_runs_pass(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    for seed in range(2, 7):
        v = verdict_of(fake_run(tmp_path / f"run{seed}", seed=seed), base)
        assert v["verdict"] == "pass", v
        assert v["exit_code"] == 0


def test_a_latency_regression_is_caught_and_named(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    v = verdict_of(fake_run(tmp_path / "run", seed=2, latency_ms=26.0), base)
    assert v["verdict"] == "regression" and v["exit_code"] == 1
    assert "p95" in v["regressions"] and "rps" not in v["regressions"]
    p95 = next(r for r in v["metrics"] if r["metric"] == "p95")
    assert p95["ci_low"] > 1.1 and p95["method"].startswith("bootstrap")


def test_a_throughput_drop_and_an_error_rise_are_caught(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    v = verdict_of(fake_run(tmp_path / "slow", seed=2, rps=80.0), base)
    # the fake runs ramp from 0 to 4 users, so the ramp's saturation throughput fell with the rest
    assert v["regressions"] == ["rps", "saturation"]
    saturation = next(r for r in v["metrics"] if r["metric"] == "saturation")
    assert saturation["method"] == "stored figure" and saturation["ratio"] < 0.9
    v = verdict_of(fake_run(tmp_path / "errors", seed=3, error_rate=0.05), base)
    assert "error_rate" in v["regressions"]


def test_a_change_within_the_tolerance_passes_and_tolerances_come_from_the_scenario(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    assert verdict_of(fake_run(tmp_path / "a", seed=2, latency_ms=21.0), base)["verdict"] == "pass"
    loose = fake_run(tmp_path / "b", seed=3, latency_ms=26.0, check={"p95_may_rise": "50%"})
    assert verdict_of(loose, base)["verdict"] == "pass"
    assert verdict_of(loose, base, "p95_may_rise=10%")["verdict"] == "regression"


def test_an_improvement_is_reported_but_passes(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    v = verdict_of(fake_run(tmp_path / "fast", seed=2, latency_ms=12.0), base)
    assert v["verdict"] == "pass"
    assert {r["metric"]: r["status"] for r in v["metrics"]}["p95"] == "improved"


def test_a_summary_only_baseline_falls_back_to_stored_figures_and_says_so(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    v = verdict_of(fake_run(tmp_path / "run", seed=2, latency_ms=30.0), base / "summary.json")
    assert v["verdict"] == "regression"
    assert all(r["method"] == "stored figure" for r in v["metrics"])
    assert any("without a noise estimate" in n for n in v["notes"])


def test_invalid_run_is_no_evidence_and_invalid_baseline_is_refused(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    bad = fake_run(tmp_path / "bad", seed=2, valid=False)
    assert verdict_of(bad, base)["exit_code"] == 3
    with pytest.raises(UserError) as err:
        verdict_of(base, bad)
    assert err.value.exit_code == 3


def test_calibration_normalises_a_slower_machine(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    slow_machine = fake_run(tmp_path / "run", seed=2, latency_ms=30.0, rps=70.0)
    cal_base = fake_run(tmp_path / "cal-base", seed=3, rps=200.0)
    cal_run = fake_run(tmp_path / "cal-run", seed=4, rps=140.0)
    assert gate.run_check([slow_machine], [base], [])["verdict"] == "regression"
    v = gate.run_check([slow_machine], [base], [], cal_run, cal_base)
    assert v["verdict"] == "pass", v
    assert v["calibration_factor"] == pytest.approx(200 / 140, rel=0.05)


def test_bad_tolerances_are_located() -> None:
    with pytest.raises(UserError) as err:
        gate.check_settings(Path("nowhere"), ["p95_may_rise=lots", "p96_may_rise=1%"])
    text = " ".join(err.value.messages)
    assert "check.p95_may_rise" in text and "check.p96_may_rise: unknown key" in text


def test_cli_prints_the_table_and_writes_junit_and_json(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    run = fake_run(tmp_path / "run", seed=2, latency_ms=26.0)
    junit, out = tmp_path / "gate.xml", tmp_path / "gate.json"
    result = harness("check", str(run), "--baseline", str(base), "--junit", str(junit), "--json", str(out),
                     timeout=60)
    assert result.returncode == 1, result.stderr
    assert "p95 latency (ms)" in result.stdout and "REGRESSION" in result.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures")) >= 1
    assert json.loads(out.read_text())["verdict"] == "regression"
    missing = harness("check", str(run), "--baseline", str(tmp_path / "nope"), timeout=60)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def gate_cli(*args: str) -> tuple[int, str, str]:
    """`python -m harness check ARGS` in this process (the same argument parsing and output as the
    command, without a process start per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", *args])
    return code, out.getvalue(), err.getvalue()


def test_ci_tolerances_given_as_check_key_value_as_ci_run_does(tmp_path: Path) -> None:
    """.ci/run widens the scenario's tolerances with --check KEY=VALUE: a run 15% slower at p95 is a
    regression under the default 10% and passes under 20%."""
    base = fake_run(tmp_path / "base", seed=1)
    run = fake_run(tmp_path / "run", seed=2, latency_ms=23.0)
    code, out, _ = gate_cli(str(run), "--baseline", str(base))
    assert code == 1 and "REGRESSION in p95" in out, out
    code, out, err = gate_cli(str(run), "--baseline", str(base), "--check", "p95_may_rise=20%",
                              "--check", "rps_may_fall=10%")
    assert code == 0, out + err
    assert "may rise 20%" in out and "may fall 10%" in out
    code, _, err = gate_cli(str(run), "--baseline", str(base), "--check", "p95_may_rise")
    assert code == 2 and "write KEY=VALUE" in err and "Traceback" not in err


def test_several_baselines_are_pooled_as_repeats(tmp_path: Path) -> None:
    bases = [fake_run(tmp_path / f"base{k}", seed=k) for k in (1, 2)]
    slow = fake_run(tmp_path / "slow", seed=3, latency_ms=30.0)
    code, out, err = gate_cli(str(slow), "--baseline", str(bases[0]), "--baseline", str(bases[1]))
    assert code == 1 and "REGRESSION in p95" in out, out + err
    assert "resampling repeats then windows (1 run, 2 baseline)" in out
    code, out, err = gate_cli(str(fake_run(tmp_path / "same", seed=4)), "--baseline", str(bases[0]),
                              "--baseline", str(bases[1]))
    assert code == 0, out + err


def test_calibration_flags_normalise_a_slower_machine_through_the_cli(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    slow_machine = fake_run(tmp_path / "run", seed=2, latency_ms=30.0, rps=70.0)
    cal_base = fake_run(tmp_path / "cal-base", seed=3, rps=200.0)
    cal_run = fake_run(tmp_path / "cal-run", seed=4, rps=140.0)
    assert gate_cli(str(slow_machine), "--baseline", str(base))[0] == 1
    code, out, err = gate_cli(str(slow_machine), "--baseline", str(base), "--calibration", str(cal_run),
                              "--baseline-calibration", str(cal_base))
    assert code == 0, out + err
    factor = re.search(r"normalised by calibration: this machine is ([\d.]+)x as slow", out)
    assert factor and float(factor.group(1)) == pytest.approx(200 / 140, rel=0.05), out  # the calibrations' ok_rps


def test_an_invalid_run_is_a_junit_error_and_exit_3(tmp_path: Path) -> None:
    base = fake_run(tmp_path / "base", seed=1)
    bad = fake_run(tmp_path / "bad", seed=2, valid=False)
    junit = tmp_path / "gate.xml"
    code, out, _ = gate_cli(str(bad), "--baseline", str(base), "--junit", str(junit))
    assert code == 3 and "INVALID run" in out and "generator saturated" in out
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("errors")) == len(suite.findall("testcase")) > 0
    assert int(suite.get("failures")) == 0
    for case in suite.findall("testcase"):
        error = case.find("error")
        assert error is not None and "generator saturated" in error.get("message"), ElementTree.tostring(case)
    good = tmp_path / "good.xml"
    assert gate_cli(str(fake_run(tmp_path / "ok", seed=3)), "--baseline", str(base), "--junit", str(good))[0] == 0
    assert int(ElementTree.parse(good).getroot().find("testsuite").get("errors")) == 0


def test_a_busier_machine_during_the_run_is_noted(tmp_path: Path) -> None:
    """System CPU more than 25 points above the baseline's: the verdict says so (a burst of other
    work may explain a regression); 10 points more is not worth a note."""
    base = fake_run(tmp_path / "base", seed=1, system_cpu=30.0)
    busy = fake_run(tmp_path / "busy", seed=2, system_cpu=80.0)
    calm = fake_run(tmp_path / "calm", seed=3, system_cpu=40.0)
    code, out, _ = gate_cli(str(busy), "--baseline", str(base))
    assert "the machine was busier during the run than during the baseline (system CPU 80% vs 30%)" in out
    code, out, _ = gate_cli(str(calm), "--baseline", str(base))
    assert code == 0 and "busier" not in out


def test_a_run_shorter_than_5_windows_falls_back_to_stored_figures(tmp_path: Path) -> None:
    """6 s with a 2 s warm-up leaves 4 one-second windows: too few for a bootstrap, so the stored
    whole-run figures are compared, and the output says so; a 1.5x slower short run still fails."""
    base = fake_run(tmp_path / "base", seed=1)
    short = fake_run(tmp_path / "short", seed=2, seconds=6)
    code, out, err = gate_cli(str(short), "--baseline", str(base))
    assert code == 0, out + err
    assert "method: stored figure" in out and "without a noise estimate" in out
    slow_short = fake_run(tmp_path / "slow-short", seed=3, seconds=6, latency_ms=30.0)
    code, out, _ = gate_cli(str(slow_short), "--baseline", str(base))
    assert code == 1 and "method: stored figure" in out
    long_enough = fake_run(tmp_path / "seven", seed=4, seconds=7)  # 5 windows: the bootstrap again
    code, out, _ = gate_cli(str(long_enough), "--baseline", str(base))
    assert code == 0 and "bootstrap" in out


@pytest.mark.e2e
def test_two_real_runs_a_doubled_sleep_is_a_regression(tmp_path: Path) -> None:
    scenario = str(ROOT / "scenarios" / "gate-sleep.yaml")
    short = ["--duration", "6s", "--quiet"]
    base, slow = tmp_path / "base", tmp_path / "slow"
    assert harness("run", scenario, "--out", str(base), *short).returncode == 0
    assert harness("run", scenario, "--out", str(slow), *short, "--set", "target.server.sleep_ms=40").returncode == 0
    result = harness("check", str(slow), "--baseline", str(base))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REGRESSION" in result.stdout
    back = harness("check", str(base), "--baseline", str(slow))  # the other way round: an improvement
    assert back.returncode == 0 and "improved" in back.stdout, back.stdout + back.stderr
    assert_all_gone(base)
    assert_all_gone(slow)


def slowed_copy(folder: Path, dest: Path, factor: float) -> Path:
    """A copy of a run folder whose every answered request took `factor` times as long."""
    shutil.copytree(folder, dest)
    for samples in dest.glob("samples-*.csv*"):
        df = pd.read_csv(samples)
        df["end"] = df["start"] + factor * (df["end"] - df["start"])
        df.to_csv(samples, index=False)
    return dest


def test_the_committed_ci_baseline_is_a_small_valid_run_with_samples(tmp_path: Path) -> None:
    baseline = ROOT / "benchmarks" / "baselines" / "gate-sleep"
    assert sum(f.stat().st_size for f in baseline.iterdir()) < 100_000
    side = gate.load_side([baseline], 1.0)
    assert side.summaries[0]["valid"] and side.runs is not None and sum(len(w) for w in side.runs) >= 5
    slower = slowed_copy(baseline, tmp_path / "slower", 1.5)  # the baseline can tell a slower run
    v = gate.run_check([slower], [baseline], [])
    assert v["verdict"] == "regression" and "p95" in v["regressions"], v
    assert all(r["method"].startswith("bootstrap") for r in v["metrics"] if r["metric"] != "error_rate")
    assert gate.run_check([baseline], [slower], [])["verdict"] == "pass"


def repeated(folder: Path, rps_per_repeat: list[float], seed: int) -> Path:
    for k, rps in enumerate(rps_per_repeat, start=1):
        fake_run(folder / f"repeat-{k}", rps=rps, seed=seed + k)
    return folder


def test_one_slow_repeat_out_of_three_is_not_a_regression_but_three_are(tmp_path: Path) -> None:
    """Repeats are resampled as groups: a burst that slowed one repeat widens the interval instead
    of being averaged into a tight, wrong verdict; the same slowdown in every repeat is caught."""
    base = repeated(tmp_path / "base", [100, 100, 100], seed=10)
    one_slow = repeated(tmp_path / "one-slow", [100, 100, 70], seed=20)
    all_slow = repeated(tmp_path / "all-slow", [70, 70, 70], seed=30)

    v = gate.run_check([one_slow], [base], [])
    rps = next(r for r in v["metrics"] if r["metric"] == "rps")
    assert rps["ratio"] == pytest.approx(0.9, abs=0.02) and rps["status"] == "ok", rps
    assert rps["ci_low"] < 0.8 and rps["ci_high"] > 0.95
    assert "resampling repeats then windows (3 run, 3 baseline)" in rps["method"]

    # the same windows pooled as if each side were one run would look like a sure regression
    def pooled(folder: Path) -> list[np.ndarray]:
        return [np.concatenate(gate.load_side(expand_repeats([folder]), 1.0).values("ok_rps"))]

    assert gate.bootstrap_ratio(pooled(one_slow), pooled(base), "mean", 0.95)[2] < 0.95

    v = gate.run_check([all_slow], [base], [])
    assert v["verdict"] == "regression" and "rps" in v["regressions"]


def test_the_ramps_saturation_and_knee_are_gated_with_repeats_as_values(tmp_path: Path) -> None:
    base = repeated(tmp_path / "base", [100, 100, 100], seed=40)
    slow = repeated(tmp_path / "slow", [70, 70, 70], seed=50)
    v = gate.run_check([slow], [base], [])
    saturation = next(r for r in v["metrics"] if r["metric"] == "saturation")
    assert saturation["method"] == "bootstrap mean of the repeats' values (3 run, 3 baseline)"
    assert saturation["status"] == "regression" and saturation["ci_high"] < 0.9
    same = gate.run_check([repeated(tmp_path / "same", [100, 100, 100], seed=60)], [base], [])
    assert next(r for r in same["metrics"] if r["metric"] == "saturation")["status"] == "ok"
    # a knee is judged only where both sides found one (these fake ramps never bend)
    assert all(r["metric"] != "knee" for r in v["metrics"])
    knee_base = json.loads((base / "repeat-1" / "summary.json").read_text())["knee"]
    assert knee_base["knee_users"] is None and knee_base["text"].startswith("no knee up to")


def test_a_knee_that_moved_down_is_a_regression() -> None:
    from harness.scenario.schema import Check

    def side(*knees: float) -> gate.Side:
        return gate.Side([Path(f"r{k}") for k in range(len(knees))],
                         [{"valid": True, "knee": {"knee_users": k, "saturation_rps": 100.0}} for k in knees], None)

    moved = gate.judge(side(4.0), side(8.0), Check())
    knee = next(r for r in moved["metrics"] if r["metric"] == "knee")
    assert knee["status"] == "regression" and knee["ratio"] == 0.5 and knee["method"] == "stored figure"
    assert moved["verdict"] == "regression" and moved["regressions"] == ["knee"]
    held = gate.judge(side(8.0, 8.0, 12.0), side(8.0, 12.0, 8.0), Check())
    assert next(r for r in held["metrics"] if r["metric"] == "knee")["status"] == "ok"
