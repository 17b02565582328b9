"""Sample files being written by other processes, read as they grow: the complete lines appended
since the last call, summarised like a generator's report (the Locust engine's progress) or handed
on as they are (the live metrics)."""
from __future__ import annotations

from pathlib import Path

from harness.engines.base import ProgressMessage
from harness.results import layout
from harness.results.samples import progress_fields


class SampleTail:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.sent: dict[int, int] = {}
        self.errors: dict[int, int] = {}

    def progress(self) -> list[ProgressMessage]:
        out = []
        for path in layout.sample_files(self.run_dir):
            if path.suffix != ".csv":
                continue
            gen = layout.generator_of(path)
            latencies: list[float] = []
            for line in self._new_lines(path):
                fields = progress_fields(line)
                if fields is None:
                    continue
                error, latency = fields
                self.sent[gen] = self.sent.get(gen, 0) + 1
                if error:
                    self.errors[gen] = self.errors.get(gen, 0) + 1
                if latency is not None:
                    latencies.append(latency)
            out.append(ProgressMessage(gen, self.sent.get(gen, 0), self.errors.get(gen, 0), latencies))
        return out

    def new_rows(self) -> list[str]:
        """Every complete line appended to any sample file since the last call (header lines too)."""
        return [line for path in layout.sample_files(self.run_dir) if path.suffix == ".csv"
                for line in self._new_lines(path)]

    def _new_lines(self, path: Path) -> list[str]:
        offset = self.offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        cut = data.rfind(b"\n")
        if cut < 0:
            return []
        self.offsets[path] = offset + cut + 1
        return data[:cut].decode(errors="replace").splitlines()
