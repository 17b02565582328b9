"""Resource sampling with psutil: CPU, RSS and threads of the server (master and each worker),
the generator processes and the harness itself, every ~0.5 s on the run's clock."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil

from harness.results import resources
from harness.run.sampler import CsvSampler


class ResourceMonitor(CsvSampler):
    """Background thread writing `resources.csv`; process lists are re-read each tick (workers respawn)."""

    def __init__(self, path: Path, t0: float, roles: dict[str, Callable[[], list[int]]],
                 interval: float = 0.5) -> None:
        super().__init__(path, resources.HEADER, t0, interval, "resource-monitor")
        self.roles = roles
        self._procs: dict[int, psutil.Process] = {}
        self._latest: dict[str, float] = {}  # role -> CPU % summed over its processes at the last tick

    def start(self) -> None:
        psutil.cpu_percent(None)
        super().start()

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # prime: the first reading is always 0
            except psutil.Error:
                return None
            self._procs[pid] = proc
        return proc

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        lines = [resources.format_line(t, "system", 0, psutil.cpu_percent(None), psutil.virtual_memory().used, 0)]
        latest: dict[str, float] = {}
        for role, pids in self.roles.items():
            try:
                current = pids()
            except psutil.Error:
                current = []
            latest[role] = 0.0
            for pid in current:
                proc = self._process(pid)
                if proc is None:
                    continue
                try:
                    with proc.oneshot():
                        cpu = proc.cpu_percent(None)
                        rss = proc.memory_info().rss
                        threads = proc.num_threads()
                except psutil.Error:
                    self._procs.pop(pid, None)
                    continue
                lines.append(resources.format_line(t, role, pid, cpu, rss, threads))
                latest[role] += cpu
        self.write(lines)
        self._latest = latest

    def cpu_now(self, *roles: str) -> float | None:
        """CPU % (100 = one core) of these roles' processes at the last tick; None before any tick or
        when none of the roles is watched."""
        known = [self._latest[r] for r in roles if r in self._latest]
        return sum(known) if known else None



def children_of(pid: int) -> Callable[[], list[int]]:
    """The descendants of `pid` now; when `pid` started the harness (a server given by pid that runs
    the harness itself), less the harness and what it started, which are not the server's workers."""
    from harness.run.server_process import ancestors, ours

    above_us = pid in ancestors()

    def pids() -> list[int]:
        try:
            found = psutil.Process(pid).children(recursive=True)
            mine = ours() if above_us else set()
        except psutil.Error:
            return []
        return [c.pid for c in found if c.pid not in mine]
    return pids
