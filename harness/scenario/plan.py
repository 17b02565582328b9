"""Load plans: a scenario's stages as pure functions of time, testable without a socket.

Closed model: target = concurrent users. Open model: target = arrivals per second, and the plan
yields every request's intended send time (constant spacing or seeded Poisson), lazily in chunks
so a long soak at a high rate does not hold millions of timestamps in memory. A trace replay
(`arrival: "trace"`) is an open-model plan of one stage whose arrival times are the trace's own.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harness.scenario.schema import Scenario
    from harness.scenario.trace import Trace

CHUNK = 4096


@dataclass(frozen=True)
class Segment:
    start: float
    duration: float
    begin: float  # target at segment start
    end: float  # target at segment end
    cumulative: float  # integral of the target up to segment start (open: expected arrivals)

    @property
    def stop(self) -> float:
        return self.start + self.duration

    def value_at(self, t: float) -> float:
        if self.duration <= 0:
            return self.end
        return self.begin + (self.end - self.begin) * (t - self.start) / self.duration

    @property
    def area(self) -> float:
        return (self.begin + self.end) / 2.0 * self.duration


@dataclass(frozen=True)
class LoadPlan:
    model: str  # "closed" | "open"
    segments: tuple[Segment, ...]
    warmup: float = 0.0
    arrival: str = "constant"  # "constant" | "poisson" | "trace"
    seed: int = 0
    times: np.ndarray | None = field(default=None, compare=False)  # trace: every arrival, sorted
    notes: tuple[str, ...] = ()  # what the run should say about its plan (a trace replayed sorted)

    @classmethod
    def from_stages(cls, model: str, stages: list[tuple[float, float]], *, start: float = 0.0,
                    warmup: float = 0.0, arrival: str = "constant", seed: int = 0) -> LoadPlan:
        """Each stage moves linearly from the previous target to its own; 0 s stages jump."""
        segments = []
        t, previous, area = 0.0, float(start), 0.0
        for duration, target in stages:
            seg = Segment(t, float(duration), previous, float(target), area)
            segments.append(seg)
            t, previous, area = seg.stop, float(target), area + seg.area
        return cls(model, tuple(segments), warmup, arrival, seed)

    @classmethod
    def from_times(cls, times: np.ndarray, duration: float, *, warmup: float = 0.0,
                   notes: tuple[str, ...] = ()) -> LoadPlan:
        """Open model at recorded arrival times (sorted seconds from the start), in one stage whose
        target is their mean rate; what each window offered is the times' own count."""
        rate = len(times) / duration
        segment = Segment(0.0, float(duration), rate, rate, 0.0)
        return cls("open", (segment,), warmup, "trace", 0, np.asarray(times, dtype=np.float64), notes)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data (the Locust plan file carries it to other processes)."""
        doc = {"model": self.model, "stages": [[s.duration, s.end] for s in self.segments],
               "start": self.segments[0].begin, "warmup": self.warmup, "arrival": self.arrival,
               "seed": self.seed}
        if self.times is not None:
            doc["times"] = self.times.tolist()
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LoadPlan:
        if doc.get("times") is not None:
            return cls.from_times(np.asarray(doc["times"], dtype=np.float64), float(doc["stages"][0][0]),
                                  warmup=float(doc["warmup"]))
        return cls.from_stages(doc["model"], [(float(d), float(t)) for d, t in doc["stages"]],
                               start=float(doc["start"]), warmup=float(doc["warmup"]),
                               arrival=doc["arrival"], seed=int(doc["seed"]))

    @property
    def duration(self) -> float:
        return self.segments[-1].stop

    @property
    def peak(self) -> float:
        return max(max(s.begin, s.end) for s in self.segments)

    @cached_property
    def _starts(self) -> list[float]:
        return [s.start for s in self.segments]

    def _index(self, t: float) -> int:
        """The segment in force at t (a 0 s segment is in force from its instant on)."""
        i = bisect.bisect_right(self._starts, t) - 1
        return min(max(i, 0), len(self.segments) - 1)

    def stage_at(self, t: float) -> int:
        return self._index(t)

    def target_at(self, t: float) -> float:
        if t >= self.duration:
            return self.segments[-1].end
        return self.segments[self._index(t)].value_at(t)

    def users_at(self, t: float) -> int:
        """Closed model: whole users active at t (a ramp adds user k once the target reaches k)."""
        return int(math.floor(self.target_at(t) + 1e-9))

    def next_activation(self, user: int, t: float) -> float:
        """Earliest time >= t at which user number `user` (0-based) is active; inf if never."""
        need = user + 1
        for seg in self.segments[self._index(t):]:
            lo = max(t, seg.start)
            if seg.duration <= 0:
                if seg.end + 1e-9 >= need and lo <= seg.start:
                    return seg.start
                continue
            if lo >= seg.stop:
                continue
            if seg.value_at(lo) + 1e-9 >= need:
                return lo
            if seg.end > seg.begin and seg.end + 1e-9 >= need:
                return seg.start + (need - seg.begin) / (seg.end - seg.begin) * seg.duration
        return math.inf

    # --- open model -----------------------------------------------------------------------
    def expected_requests(self, until: float | None = None) -> float:
        """Integral of the rate from 0 to `until` (default: the whole plan)."""
        until = self.duration if until is None else min(until, self.duration)
        if self.times is not None:  # a trace: the arrivals before `until`, counted
            return float(np.searchsorted(self.times, until, side="left"))
        seg = self.segments[self._index(until)]
        if until >= seg.stop:
            return seg.cumulative + seg.area
        s = until - seg.start
        return seg.cumulative + s * (seg.begin + seg.value_at(until)) / 2.0

    def time_of(self, counts: np.ndarray) -> np.ndarray:
        """Inverse of expected_requests: when the cumulative rate reaches each value."""
        boundaries = np.array([s.cumulative for s in self.segments])
        idx = np.clip(np.searchsorted(boundaries, counts, side="right") - 1, 0, len(self.segments) - 1)
        out = np.empty_like(counts, dtype=np.float64)
        for i in np.unique(idx):
            seg = self.segments[i]
            x = counts[idx == i] - seg.cumulative
            r0 = seg.begin
            a = (seg.end - seg.begin) / (2.0 * seg.duration) if seg.duration > 0 else 0.0
            disc = np.maximum(r0 * r0 + 4.0 * a * x, 0.0)
            denom = r0 + np.sqrt(disc)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(denom > 0, 2.0 * x / denom, seg.duration)
            out[idx == i] = seg.start + np.clip(s, 0.0, seg.duration)
        return out

    def arrivals(self, part: int = 0, parts: int = 1) -> Iterator[float]:
        """Intended send times (seconds from run start) of this generator's share of requests.

        Request k of the whole plan goes to part k % parts, so parts interleave evenly and
        together give exactly the single-generator schedule.
        """
        if self.times is not None:
            mine = self.times[part::parts]
            for i in range(0, len(mine), CHUNK):
                yield from mine[i:i + CHUNK].tolist()
            return
        total = self.expected_requests()
        rng = np.random.default_rng(self.seed)
        index = 0
        level = 0.0
        while True:
            if self.arrival == "poisson":
                counts = level + np.cumsum(rng.exponential(1.0, CHUNK))
                level = float(counts[-1])
            else:
                counts = np.arange(index, index + CHUNK, dtype=np.float64) + 0.5
            counts = counts[counts < total]
            mine = counts[(np.arange(index, index + len(counts)) % parts) == part]
            yield from self.time_of(mine).tolist()
            index += len(counts)
            if len(counts) < CHUNK:
                return

    def planned_count(self, part: int = 0, parts: int = 1) -> int:
        """How many arrivals `arrivals(part, parts)` yields (constant: exact without generating)."""
        if self.times is not None:
            return max(0, (len(self.times) - part + parts - 1) // parts)
        if self.arrival == "constant":
            total = math.ceil(self.expected_requests() - 0.5)
            return max(0, (total - part + parts - 1) // parts)
        return sum(1 for _ in self.arrivals(part, parts))

    def describe_stage(self, i: int) -> str:
        seg = self.segments[i]
        if self.times is not None:
            return f"trace replay: {len(self.times)} arrivals over {seg.duration:g}s (mean {seg.end:.4g} req/s)"
        unit = "users" if self.model == "closed" else "req/s"
        if seg.duration <= 0:
            return f"jump to {seg.end:g} {unit}"
        if seg.begin == seg.end:
            return f"hold {seg.end:g} {unit} for {seg.duration:g}s"
        return f"{seg.begin:g} -> {seg.end:g} {unit} over {seg.duration:g}s"


def plan_from_scenario(scenario: Scenario) -> LoadPlan:
    """The scenario's plan; a trace is read from `load.trace.path` (made absolute by loading)."""
    load = scenario.load
    if load.trace is not None:
        trace = read_scenario_trace(scenario)
        return LoadPlan.from_times(trace.times, trace.duration, warmup=load.warmup, notes=trace.notes)
    return LoadPlan.from_stages(load.model, [(s.duration, s.target) for s in load.stages], start=load.start,
                                warmup=load.warmup, arrival=load.arrival, seed=load.seed)


def read_scenario_trace(scenario: Scenario) -> Trace:
    """The trace `load.trace` names, read (and cached) by harness.scenario.trace."""
    from harness.scenario.trace import read_trace

    spec = scenario.load.trace
    assert spec is not None
    return read_trace(spec.path, time_field=spec.time_field, unit=spec.unit, speed=spec.speed,
                      body_field=spec.body_field)
