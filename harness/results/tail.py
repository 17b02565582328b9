"""Progress from sample files being written by another process (the Locust engine): read the
complete lines appended since the last call and summarise them like a generator's report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results.samples import NOT_SENT


class SampleTail:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.sent: dict[int, int] = {}
        self.errors: dict[int, int] = {}

    def progress(self) -> list[tuple[str, int, dict[str, Any]]]:
        out = []
        for path in sorted(self.run_dir.glob("samples-*.csv")):
            gen = int(path.stem.split("-")[1])
            latencies: list[float] = []
            for line in self._new_lines(path):
                fields = line.split(",")
                if len(fields) < 5 or fields[0] == "intended" or fields[4] == NOT_SENT:
                    continue
                self.sent[gen] = self.sent.get(gen, 0) + 1
                if fields[4]:
                    self.errors[gen] = self.errors.get(gen, 0) + 1
                try:
                    latencies.append(float(fields[2]) - float(fields[0]))
                except ValueError:
                    continue
            out.append(("progress", gen, {"sent": self.sent.get(gen, 0), "errors": self.errors.get(gen, 0),
                                          "latencies": latencies}))
        return out

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
