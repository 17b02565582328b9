"""Comparison pages: labels from differing settings, deltas, ratios and the verdict on fixed
figures, then two real smoke runs with 1 and 2 workers compared through the CLI (and a glob)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.report import compare
from tests.support import SMOKE
from tests.support.cli import assert_all_gone, harness


def fake_run(name: str, **server: object) -> SimpleNamespace:
    settings = {"model": "linear", "workers": 2, "threads": 1, "lock": "none", **server}
    return SimpleNamespace(run_dir=Path(f"/runs/{name}"), summary={
        "name": "spike", "engine": "threadpool", "load_model": "closed", "generator_processes": 1,
        "target": {"url": "http://127.0.0.1:1", "server_settings": settings}})


def test_labels_name_only_the_settings_that_differ() -> None:
    runs = [fake_run("a", workers=1), fake_run("b", workers=4, threads=2), fake_run("c", workers=4, threads=2)]
    assert compare.run_labels(runs) == ["workers=1 threads=1", "workers=4 threads=2 #1", "workers=4 threads=2 #2"]
    assert compare.run_labels([fake_run("a"), fake_run("b")]) == ["a", "b"]  # nothing differs: folder names


def row(label: str, ok_rps: float, p50: float, p95: float, p99: float, errors: float, eff: float) -> dict:
    return {"run": label, "label": label, "scenario": "spike", "valid": True, "passed": True, "requests": 1000,
            "rps": ok_rps, "ok_rps": ok_rps, "error_rate": errors, "p50_ms": p50, "p90_ms": p95, "p95_ms": p95,
            "p99_ms": p99, "max_ms": p99, "server_cpu_percent": 100.0, "generator_cpu_percent": 10.0,
            "req_per_cpu_s": eff, "saturation_rps": None, "knee": None}


def test_deltas_ratios_and_which_run_is_better() -> None:
    table = compare.comparison_table([row("lock=global", 1000, 2.0, 10.0, 20.0, 0.0, 900),
                                      row("lock=none", 2000, 1.0, 5.0, 20.3, 0.0, 1500)])
    assert table["ok_rps_delta"].tolist() == [0, 1000] and table["ok_rps_ratio"].tolist() == [1.0, 2.0]
    assert table["p95_ms_ratio"].tolist() == [1.0, 0.5]
    headline, lines = compare.verdict(table)
    assert headline == "Better overall: lock=none (best on 4 of 6 main figures)"
    assert "successful req/s: best is lock=none (2,000, 2.00x the next best)" in lines
    assert "p99 latency (ms): a tie (within 3%)" in lines and "error rate: a tie (within 3%)" in lines
    split = compare.comparison_table([row("a", 1000, 1.0, 5.0, 20.0, 0.0, 900),
                                      row("b", 2000, 2.0, 9.0, 20.2, 0.0, 1500)])
    assert compare.verdict(split)[0] == "No run is better on most main figures"  # 2 wins each


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("compare")
    runs = []
    for workers in (1, 2):  # 4 users on sync workers sleeping 20 ms: 2 workers serve twice as fast
        out = base / "runs" / f"w{workers}"
        server = f"{{model: sleep, sleep_ms: 20, worker_class: sync, workers: {workers}}}"
        result = harness("run", str(SMOKE), "--out", str(out), "--quiet", "--set", f"target.server={server}",
                         "--set", "load.stages[0].target=4", "--set", "load.stages[1].target=4",
                         "--set", "load.stages[1].duration=2s")
        assert result.returncode == 0, result.stderr
        assert_all_gone(out)
        runs.append(out)
    return runs


@pytest.mark.e2e
def test_compare_two_server_configurations(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "workers.html"
    result = harness("compare", *map(str, two_runs), "-o", str(out))
    assert result.returncode == 0, result.stderr
    headline, *paths = result.stdout.splitlines()
    assert paths == [f"comparison: {out}", f"table: {out.with_suffix('.csv')}"]
    assert headline.startswith("Better overall: workers=2"), headline  # twice the workers for a sleeping model
    html = out.read_text()
    assert "Comparison of 2 runs" in html and "workers=1 (baseline)" in html and "workers=2" in html
    assert "Better overall: workers=2" in html and "No run is better" not in html
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html
    table = pd.read_csv(out.with_suffix(".csv"))
    assert table["label"].tolist() == ["workers=1", "workers=2"]
    assert table["ok_rps_ratio"].iloc[0] == 1.0 and table["ok_rps_ratio"].iloc[1] > 1.0
    assert table["p95_ms"].iloc[1] < table["p95_ms"].iloc[0]
    assert (table["requests"] > 50).all()


@pytest.mark.e2e
def test_compare_accepts_a_glob_and_refuses_too_few_runs(two_runs: list[Path], tmp_path: Path) -> None:
    pattern = str(two_runs[0].parent / "w*")
    result = harness("compare", pattern, "-o", str(tmp_path / "glob.html"))
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(tmp_path / "glob.csv")["run"].tolist() == ["w1", "w2"]
    for args, message in (([str(two_runs[0])], "at least two run folders"),
                          ([str(tmp_path / "nothing-*")], "matches no run folder"),
                          ([str(two_runs[0]), str(tmp_path / "missing")], "no such run folder")):
        result = harness("compare", *args, "-o", str(tmp_path / "x.html"))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
