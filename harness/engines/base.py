"""The seam between a run and the thing that sends its load: the Engine protocol.

A run (harness.run.runner) knows engines only through this protocol; each engine module
registers a factory under its scenario name (`engine: threadpool | locust`). The contract, as a
run uses it:

    engine = ENGINES[scenario.engine](EngineContext(...))
    t0 = engine.start()              # every generator ready; t0 on this host's monotonic clock
    while not engine.finished:
        progress.update(engine.messages(0.25))   # at most ~0.25 s per call
    engine.stop()                    # ask to stop now (idempotent, returns at once)
    engine.close(timeout)            # wait for in-flight requests; kill what lingers
    reasons = engine.reasons()       # validity problems only the engine knows

Samples go to the run folder (results.samples), never through these messages: messages only
feed the live progress line.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from harness.engines.tls import ClientTLS
    from harness.scenario.plan import LoadPlan
    from harness.scenario.schema import Scenario


class ProgressMessage(NamedTuple):
    """One generator's running totals since the run started, and latencies since its last message."""

    gen: int
    sent: int
    errors: int
    latencies: list[float]  # seconds from intended send to end, recent requests only


@dataclass(frozen=True)
class EngineContext:
    """Everything an engine needs to drive one run."""

    scenario: Scenario
    plan: LoadPlan
    bodies: list[bytes]  # request body variants, cycled through
    headers: dict[str, str]
    host: str
    port: int
    url: str  # the target's base URL (scheme, host, port and base path)
    run_dir: Path
    tls: ClientTLS | None = None  # HTTPS settings, for an https target
    base_path: str = ""  # the url's path, put before every endpoint (Locust gets it with the url)
    model: str | None = None  # a generative run's model (target.model or the server's first)


class Engine(Protocol):
    @property
    def pids(self) -> list[int]:
        """The generator processes, for the resource monitor."""
        ...

    @property
    def finished(self) -> bool:
        ...

    def start(self) -> float: ...

    def messages(self, timeout: float) -> list[ProgressMessage]: ...

    def stop(self) -> None: ...

    def close(self, timeout: float) -> None: ...

    def reasons(self) -> list[str]: ...


ENGINES: dict[str, Callable[[EngineContext], Engine]] = {}


def register(name: str) -> Callable[[Callable[[EngineContext], Engine]], Callable[[EngineContext], Engine]]:
    """Decorator: make a factory available as `engine: NAME` in scenarios."""
    def add(factory: Callable[[EngineContext], Engine]) -> Callable[[EngineContext], Engine]:
        ENGINES[name] = factory
        return factory
    return add


def create(context: EngineContext) -> Engine:
    """The engine the scenario names (importing the engine modules registers them)."""
    from harness.engines import locust_bridge, threadpool  # noqa: F401 - registration

    return ENGINES[context.scenario.engine](context)
