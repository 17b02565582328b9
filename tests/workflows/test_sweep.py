"""Sweeps: combinations and skips, resuming, ranking, the comparison page; one real two-combination sweep."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UserError
from harness.results.summary import RunResult
from harness.scenario.loading import load_scenario
from harness.scenario.schema import Scenario
from harness.workflows import sweep
from tests.support import SMOKE
from tests.support.cli import assert_all_gone, harness
from tests.support.fake_runs import CAPACITY_SCENARIO as CAPACITY
from tests.support.fake_runs import FakeTarget, fake_run

SCENARIO = """
name: tiny
target:
  server: {model: sleep, sleep_ms: 10, worker_class: gthread}
load:
  stages: [{duration: 2s, target: 4}]
  warmup: 1s
sweep:
  server: {threads: [1, 4], workers: [1, 4], lock: [none, global], max_batch: [1, 8]}
"""


def write(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


class FakeMeasure:
    """Writes a synthetic run folder whose throughput grows with threads; records the calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, scenario: Scenario, path: Path, folder: Path) -> dict[str, Any]:
        settings = scenario.target.server.model_dump()
        self.calls.append(settings)
        folder.rmdir()
        fake_run(folder, rps=50.0 * settings["threads"] * settings["workers"], seed=len(self.calls), server=settings)
        return json.loads((folder / "summary.json").read_text())


def _machine_cores() -> int:
    import target_server.config

    return target_server.config.available_cores()


# the rule's other side from this machine's (4 workers fit from 4 cores on): with the machine's own
# count, every outcome of the rule is exercised on any machine
OTHER_SIDE = 4 if _machine_cores() < 4 else 2


def cores_ids(value: int | None) -> str:
    return "machine-cores" if value is None else f"{value}-cores"


@pytest.fixture
def cores(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The cores the sweep sees: this machine's, or pinned (in the sweep's rule and in the server
    config's default torch threads, which both ask target_server.config.available_cores)."""
    import target_server.config

    pinned = request.param
    if pinned is None:
        return target_server.config.available_cores()
    monkeypatch.setattr(target_server.config, "available_cores", lambda: pinned)
    monkeypatch.setattr(sweep, "available_cores", lambda: pinned)
    return pinned


def oversubscribes(workers: int, cores: int) -> bool:
    """The rule for the matrix above (torch_threads unset = cores // workers, at least 1): workers x
    torch threads exceeds the cores exactly when there are more workers than cores."""
    return workers * max(1, cores // workers) > cores


VALID_PER_WORKERS = 5  # t1 none/global, t4 none/global, t4 none with batching; the rest are invalid


@pytest.mark.parametrize("cores", [None, 1, 2, 4, 16], ids=cores_ids, indirect=True)
def test_invalid_and_oversubscribing_combinations_are_skipped_with_the_reason(tmp_path: Path, cores: int) -> None:
    scenario, _ = load_scenario(write(tmp_path))
    combos = sweep.combinations(scenario, tmp_path / "out")
    assert len(combos) == 16
    reasons = {c.label: c.skip for c in combos}
    assert "batcher already serialises" in reasons["threads=4 workers=1 lock=global max_batch=8"]
    assert "dynamic batching needs" in reasons["threads=1 workers=1 lock=none max_batch=8"]
    assert reasons["threads=4 workers=1 lock=none max_batch=8"] is None
    four_workers = reasons["threads=4 workers=4 lock=none max_batch=1"]
    if oversubscribes(4, cores):
        assert four_workers is not None and f"oversubscribes the cores: 4 workers x 1 torch threads > {cores}" \
            in four_workers
    else:
        assert four_workers is None
    assert sum(c.skip is None for c in combos) == VALID_PER_WORKERS * sum(not oversubscribes(w, cores) for w in (1, 4))


@pytest.mark.parametrize("cores", [None, OTHER_SIDE], ids=cores_ids, indirect=True)
def test_sweep_runs_ranks_writes_the_page_and_resumes(tmp_path: Path, cores: int) -> None:
    path, out, measure = write(tmp_path), tmp_path / "out", FakeMeasure()
    lines: list[str] = []
    code, doc = sweep.run_sweep(path, [], out, measure, say=lines.append)
    assert code == 0
    ran = len(measure.calls)
    runnable_workers = [w for w in (1, 4) if not oversubscribes(w, cores)]
    assert ran == VALID_PER_WORKERS * len(runnable_workers)
    assert {c["workers"] for c in measure.calls} == set(runnable_workers)
    assert sum("skipped" in line for line in lines) == 16 - ran
    best = doc["ranking"][0]
    assert best["rank"] == 1 and best["settings"]["threads"] == 4  # fake rps = 50 x threads x workers
    assert best["settings"]["workers"] == max(runnable_workers)
    # the fake's throughput ignores lock and batching: the best threads=4 combinations are the same
    # measurement, tied within noise, and no winner may be named among them
    top = {r["label"] for r in doc["ranking"]
           if r["settings"]["threads"] == 4 and r["settings"]["workers"] == max(runnable_workers)}
    assert doc["winner_label"] is None and set(doc["tied"]) == top
    assert "tied within noise" in doc["winner"] and all(r["interval"] for r in doc["ranking"])
    page = Path(doc["page"]).read_text()
    assert "ranking by ok_rps" in page and "Skipped combinations" in page
    assert json.loads((out / sweep.SWEEP_FILE).read_text())["winner"] == doc["winner"]
    # resume: complete folders are kept, an incomplete one is run again
    (Path(doc["ranking"][-1]["folder"]) / "summary.json").unlink()
    again = FakeMeasure()
    code, _ = sweep.run_sweep(path, [], out, again, say=lines.append)
    assert code == 0 and len(again.calls) == 1


def test_sweep_settings_are_checked_with_their_location(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_scenario(write(tmp_path, SCENARIO.replace("lock:", "lokc:")))
    assert "sweep.server: lokc: not a server setting (did you mean 'lock'?)" in err.value.messages[0]
    with pytest.raises(UserError):
        sweep.combinations(load_scenario(SMOKE)[0], tmp_path)


def test_with_capacity_configured_the_sweep_ranks_by_capacity(tmp_path: Path) -> None:
    from harness.workflows.capacity import search_capacity

    path = write(tmp_path, CAPACITY + "sweep:\n  server: {threads: [2, 8, 4]}\n")

    def measure(scenario: Scenario, one_path: Path, folder: Path) -> dict[str, Any]:
        fake = FakeTarget(25.0 * scenario.target.server.threads)

        def target(probe: Scenario, probe_path: Path, run_dir: Path) -> RunResult:
            run_dir.rmdir()
            fake_run(run_dir, rps=probe.load.stages[-1].target, server=probe.target.server.model_dump())
            return fake(probe, probe_path, run_dir)

        overrides = [f"target.server.threads={scenario.target.server.threads}"]
        return search_capacity(one_path, overrides, folder, target, say=lambda _: None)

    code, doc = sweep.run_sweep(path, [], tmp_path / "out", measure, say=lambda _: None)
    assert code == 0 and doc["rank_by"] == "capacity"
    assert [r["settings"]["threads"] for r in doc["ranking"]] == [8, 4, 2]
    assert 200 * 0.97 <= doc["ranking"][0]["figure"] <= 200
    assert "ranking by capacity" in Path(doc["page"]).read_text()
    lines: list[str] = []
    sweep.run_sweep(path, [], tmp_path / "out", measure, say=lines.append)
    assert all("earlier run" in line for line in lines)


class NoisyMeasure(FakeMeasure):
    """FakeMeasure whose throughput also varies between runs of the same settings by `spread`."""

    def __init__(self, spread: float) -> None:
        super().__init__()
        self.spread = spread

    def __call__(self, scenario: Scenario, path: Path, folder: Path) -> dict[str, Any]:
        settings = scenario.target.server.model_dump()
        self.calls.append(settings)
        folder.rmdir()
        wobble = 1 + self.spread * ((len(self.calls) * 7919) % 11 - 5) / 5  # deterministic, within +-spread
        fake_run(folder, rps=50.0 * settings["threads"] * wobble, seed=len(self.calls), server=settings)
        return json.loads((folder / "summary.json").read_text())


def test_repeats_run_round_by_round_and_name_a_winner_only_past_the_noise(tmp_path: Path) -> None:
    clear = write(tmp_path, SCENARIO.replace("{threads: [1, 4], workers: [1, 4], lock: [none, global], "
                                             "max_batch: [1, 8]}", "{threads: [1, 4]}"))
    measure = NoisyMeasure(0.03)
    code, doc = sweep.run_sweep(clear, ["sweep.repeat=3"], tmp_path / "clear", measure, say=lambda _: None)
    assert code == 0 and [c["threads"] for c in measure.calls] == [1, 4, 1, 4, 1, 4]  # interleaved rounds
    best = doc["ranking"][0]
    assert doc["winner_label"] == "threads=4" and doc["repeat"] == 3 and best["repeats"] == 3
    assert best["interval_method"] == "95% t interval of the mean of 3 repeats" and len(best["values"]) == 3
    assert sorted(p.name for p in (tmp_path / "clear" / "threads=4").iterdir()) == ["repeat-1", "repeat-2",
                                                                                   "repeat-3"]
    # the same settings twice (an A/A sweep): one measurement, tied within noise whatever the draws
    same = write(tmp_path, SCENARIO.replace("{threads: [1, 4], workers: [1, 4], lock: [none, global], "
                                            "max_batch: [1, 8]}", "{threads: [4, 4]}"))
    code, doc = sweep.run_sweep(same, ["sweep.repeat=3"], tmp_path / "same", NoisyMeasure(0.05), say=lambda _: None)
    assert doc["winner_label"] is None and doc["tied"] in (["threads=4", "threads=4 (copy 2)"],
                                                           ["threads=4 (copy 2)", "threads=4"])
    assert (tmp_path / "same" / "threads=4_copy2" / "repeat-3" / "summary.json").is_file()
    # resuming keeps every complete repeat
    again = NoisyMeasure(0.05)
    sweep.run_sweep(same, ["sweep.repeat=3"], tmp_path / "same", again, say=lambda _: None)
    assert again.calls == []


AA_SCENARIO = """
name: aa
target:
  server: {model: sleep, worker_class: gthread, threads: 4}
load:
  stages: [{duration: 7s, target: 4}]
  start: 4
  warmup: 1s
"""


@pytest.mark.e2e
def test_a_real_sweep_of_the_same_settings_twice_is_a_tie(tmp_path: Path) -> None:
    path = write(tmp_path, AA_SCENARIO + "sweep:\n  server: {sleep_ms: [20, 20]}\n  repeat: 2\n")
    result = harness("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No winner: " in result.stdout and "tied within noise" in result.stdout
    doc = json.loads((tmp_path / "out" / sweep.SWEEP_FILE).read_text())
    assert doc["winner_label"] is None and len(doc["tied"]) == 2
    for folder in (tmp_path / "out").glob("sleep_ms=*/repeat-*"):
        assert_all_gone(folder)


@pytest.mark.e2e
def test_a_real_sweep_of_20_and_30_ms_names_the_faster(tmp_path: Path) -> None:
    path = write(tmp_path, AA_SCENARIO + "sweep:\n  server: {sleep_ms: [30, 20]}\n")
    result = harness("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads((tmp_path / "out" / sweep.SWEEP_FILE).read_text())
    assert doc["winner_label"] == "sleep_ms=20", result.stdout
    assert "Winner: sleep_ms=20" in result.stdout and "one-second windows" in doc["ranking"][0]["interval_method"]
    assert (tmp_path / "out" / "sweep.html").is_file()
    for folder in (tmp_path / "out").glob("sleep_ms=*"):
        assert_all_gone(folder)
