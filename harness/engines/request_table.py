"""What a generator sends: its table of requests, and which one the n-th request takes.

Both engines share this. Fixed bodies (payload, payload_file, generate) are held whole by every
generator and picked by global request index, so arrival k of the open model sends body
k mod N whichever generator sends it. A dataset (target.dataset) is split instead: each
generator reads only its share (harness.scenario.dataset) and cycles through it, so memory stays
bounded by the share; in a first pass, arrival k still sends the k-th request of the dataset's
order. A mix (target.requests) puts every kind's requests in one table and picks a kind for
request index k from a seeded schedule of kinds drawn by weight (the same in every generator and
engine), then that kind's next request. Request ids (target.request_id) are `<run>-<gen>-<seq>`.
"""
from __future__ import annotations

import functools
import itertools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from harness.scenario import dataset

if TYPE_CHECKING:
    from harness.scenario.schema import Dataset, Scenario

T = TypeVar("T")
SCHEDULE = 1 << 16  # kinds drawn for a mix, cycled: enough that weights hold to a fraction of a percent


@dataclass(frozen=True)
class DatasetSource:
    """A checked dataset, as each generator process reads its share of it (picklable, small)."""

    path: str
    count: int
    order: str
    seed: int

    def read(self, part: int, parts: int, build: Callable[[dataset.Line], T]) -> list[T]:
        """Generator `part`'s share; with fewer requests than generators, a later one gets one
        request (position part mod count) rather than none."""
        if part >= self.count:
            part, parts = part % self.count, self.count
        return dataset.read_share(self.path, self.count, self.order, self.seed, part, parts, build)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count, "order": self.order, "seed": self.seed}


def dataset_source(scenario: Scenario) -> DatasetSource | None:
    """The scenario's dataset (already checked and made absolute by scenario loading), if any."""
    return dataset_source_of(scenario.target.dataset)


def dataset_source_of(spec: Dataset | None) -> DatasetSource | None:
    """A target's or a mix kind's dataset, as the generators read it."""
    if spec is None:
        return None
    return DatasetSource(str(Path(spec.path).absolute()), dataset.check(spec.path), spec.order, spec.seed)


def request_id_prefix(run_dir: Path | str, gen: int) -> str:
    """The part of `<run>-<gen>-<seq>` a generator shares by all its ids."""
    return f"{Path(run_dir).name}-{gen}-"


@dataclass
class Table:
    """One generator's requests (each whatever the engine sends: raw bytes, a Locust tuple) with
    their dataset line numbers and names, and how a request index maps onto them."""

    items: list[Any]
    lines: Sequence[int | None] | None = None  # the file line of each item (a dataset), else None
    names: list[str | None] | None = None  # the name of each item, None if none is named
    own_share: bool = False  # items are this generator's share (index it by own count)
    part: int = 0
    parts: int = 1
    schedule: np.ndarray | None = None  # a mix: the kind of request index k (mod its length) ...
    spans: list[tuple[int, int, bool]] | None = None  # ... each kind's (first item, items, own share)
    counters: list[itertools.count] | None = None  # ... each kind's requests so far (next() is atomic)

    def slot(self, own: int) -> int:
        """The item this generator's `own`-th request sends (counting from 0)."""
        if self.schedule is not None:
            return self._mixed(self.part + own * self.parts)
        if self.own_share:
            return own % len(self.items)
        return (self.part + own * self.parts) % len(self.items)

    def _mixed(self, k: int) -> int:
        assert self.spans is not None and self.counters is not None and self.schedule is not None
        kind = int(self.schedule[k % len(self.schedule)])
        first, count, own_share = self.spans[kind]
        return first + (next(self.counters[kind]) if own_share else k) % count


def table(items: list[Any], source: DatasetSource | None, part: int, parts: int,
          build: Callable[[dataset.Line], Any]) -> Table:
    """Fixed items (cycled by global index), or this generator's share of a dataset."""
    if source is None:
        return Table(items, part=part, parts=parts)
    rows = source.read(part, parts, lambda line: (build(line), line.number, line.name))
    names = [r[2] for r in rows]
    return Table([r[0] for r in rows], array("q", [r[1] for r in rows]),
                 names if any(n is not None for n in names) else None, own_share=True, part=part, parts=parts)


def shared(items: list[Any], part: int, parts: int) -> Table:
    """A generator's share of per-arrival items already in memory (e.g. a trace's bodies): the
    same split as a dataset's, so arrival k sends item k."""
    return Table(dataset.share(items, part, parts), own_share=True, part=part, parts=parts)


@dataclass(frozen=True)
class Kind:
    """One kind of request of a mix, as a generator process builds its part of the table (picklable)."""

    name: str
    weight: float
    items: list[Any]  # its fixed requests (when no dataset), as the engine sends them
    dataset: DatasetSource | None = None
    template: Any = None  # what `build` needs to turn one of its dataset lines into a request


def schedule(weights: Sequence[float], seed: int) -> np.ndarray:
    """The kind of each request index, drawn by weight from the seed (the same everywhere)."""
    p = np.asarray(weights, dtype=np.float64)
    return np.random.default_rng(seed).choice(len(p), size=SCHEDULE, p=p / p.sum()).astype(np.int32)


def mix_table(kinds: list[Kind], seed: int, part: int, parts: int,
              build: Callable[[Any, dataset.Line], Any]) -> Table:
    """Every kind's requests (a dataset kind: this generator's share of it) in one table."""
    items: list[Any] = []
    lines: list[int | None] = []
    names: list[str | None] = []
    spans = []
    for kind in kinds:
        got: list[Any] = list(kind.items)
        numbers: list[int | None] = [None] * len(got)
        if kind.dataset is not None:
            rows = kind.dataset.read(part, parts, functools.partial(_numbered, build, kind.template))
            got, numbers = [r[0] for r in rows], [r[1] for r in rows]
        spans.append((len(items), len(got), kind.dataset is not None))
        items += got
        lines += numbers
        names += [kind.name] * len(got)
    return Table(items, lines, names, part=part, parts=parts, schedule=schedule([k.weight for k in kinds], seed),
                 spans=spans, counters=[itertools.count() for _ in kinds])


def _numbered(build: Callable[[Any, dataset.Line], Any], template: Any, line: dataset.Line) -> tuple[Any, int]:
    return build(template, line), line.number
