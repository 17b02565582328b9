"""A background thread that samples every `interval` seconds into one CSV of the run folder, on
the run's clock (the resource monitor, the GPU sampler)."""
from __future__ import annotations

import threading
from pathlib import Path


class CsvSampler:
    """Opens the file with its header; `sample()` (a subclass's) runs every tick until `stop()`."""

    def __init__(self, path: Path, header: str, t0: float, interval: float, name: str) -> None:
        self.path, self.t0, self.interval = path, t0, interval
        self._file = open(path, "w", buffering=1)
        self._file.write(header)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> None:
        raise NotImplementedError

    def write(self, lines: list[str]) -> None:
        self._file.write("".join(lines))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._file.close()
