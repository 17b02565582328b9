"""What a generator sends: its table of requests, and which one the n-th request takes.

Both engines share this. Fixed bodies (payload, payload_file, generate) are held whole by every
generator and picked by global request index, so arrival k of the open model sends body
k mod N whichever generator sends it. A dataset (target.dataset) is split instead: each
generator reads only its share (harness.scenario.dataset) and cycles through it, so memory stays
bounded by the share; in a first pass, arrival k still sends the k-th request of the dataset's
order. Request ids (target.request_id) are `<run>-<gen>-<seq>`.
"""
from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.scenario import dataset

if TYPE_CHECKING:
    from harness.scenario.schema import Scenario

T = TypeVar("T")


@dataclass(frozen=True)
class DatasetSource:
    """A checked dataset, as each generator process reads its share of it (picklable, small)."""

    path: str
    count: int
    order: str
    seed: int

    def read(self, part: int, parts: int, build: Callable[[dataset.Line], T]) -> list[T]:
        return dataset.read_share(self.path, self.count, self.order, self.seed, part, parts, build)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count, "order": self.order, "seed": self.seed}


def dataset_source(scenario: Scenario) -> DatasetSource | None:
    """The scenario's dataset (already checked and made absolute by scenario loading), if any."""
    spec = scenario.target.dataset
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
    lines: array[int] | None = None  # the file line of each item (a dataset), else None
    names: list[str | None] | None = None  # the name of each item, None if none is named
    own_share: bool = False  # items are this generator's share (index it by own count)
    part: int = 0
    parts: int = 1

    def slot(self, own: int) -> int:
        """The item this generator's `own`-th request sends (counting from 0)."""
        if self.own_share:
            return own % len(self.items)
        return (self.part + own * self.parts) % len(self.items)


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
