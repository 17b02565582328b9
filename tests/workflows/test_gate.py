"""The regression gate on synthetic run folders: known regressions caught, equal runs pass, outputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

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
    assert v["regressions"] == ["rps"]
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
    result = subprocess.run([sys.executable, "-m", "harness", "check", str(run), "--baseline", str(base),
                             "--junit", str(junit), "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "p95 latency (ms)" in result.stdout and "REGRESSION" in result.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures")) >= 1
    assert json.loads(out.read_text())["verdict"] == "regression"
    missing = subprocess.run([sys.executable, "-m", "harness", "check", str(run), "--baseline",
                              str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


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
    assert harness("check", str(base), "--baseline", str(base)).returncode == 0
    assert_all_gone(base)
    assert_all_gone(slow)


def test_the_committed_ci_baseline_is_a_small_valid_run_with_samples() -> None:
    baseline = ROOT / "benchmarks" / "baselines" / "gate-sleep"
    assert sum(f.stat().st_size for f in baseline.iterdir()) < 100_000
    side = gate.load_side([baseline], 1.0)
    assert side.summaries[0]["valid"] and side.runs is not None and sum(len(w) for w in side.runs) >= 5
    assert gate.run_check([baseline], [baseline], [])["verdict"] == "pass"


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
