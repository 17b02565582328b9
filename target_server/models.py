"""The model registry: the article's linear model, a compute-heavy MLP, a sleeping stand-in and a no-op.

Every model is built in the gunicorn worker after fork (never in the master: torch's OpenMP pool
hangs after fork when it has been used before it). `expected_state_shapes` builds on the `meta`
device, so the launcher can check a weights file in the master without running a torch op.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from target_server.config import WeightsError

MLP_SIZES = (256, 2048, 2048, 10)
MLP_SEED = 1234


class SimpleModel(nn.Module):
    """The article's model: one linear layer, 3 inputs -> 1 output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MLP(nn.Module):
    """256 -> 2048 -> 2048 -> 10 with ReLU: ~1 ms per row on one core, where batching pays off."""

    def __init__(self) -> None:
        super().__init__()
        a, b, c, d = MLP_SIZES
        self.net = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SleepModel(nn.Module):
    """Waits `sleep_ms` per forward with the GIL released, like a GPU- or I/O-bound model."""

    def __init__(self, sleep_ms: float) -> None:
        super().__init__()
        self.sleep_s = sleep_ms / 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep_s)
        return torch.zeros((x.shape[0], 1), dtype=torch.float32, device=x.device)


def fill_article_dummy_weights(model: SimpleModel) -> SimpleModel:
    """The article's reproducible weights: every weight 0.1, bias 0.0, so [1,2,3] -> 0.6."""
    with torch.no_grad():
        model.linear.weight.fill_(0.1)
        model.linear.bias.fill_(0.0)
    return model


def seed_mlp_weights(model: MLP) -> MLP:
    """Deterministic weights from a private generator (the global RNG stays untouched)."""
    gen = torch.Generator().manual_seed(MLP_SEED)
    with torch.no_grad():
        for layer in model.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return model


@dataclass(frozen=True)
class ModelSpec:
    """What the server needs to know about a model before and after building it."""

    name: str
    input_width: int
    output_width: int
    uses_torch: bool
    build: Callable[[float], nn.Module | None]
    accepts_weights: bool

    def expected_state_shapes(self, sleep_ms: float = 0.0) -> dict[str, tuple[int, ...]]:
        if not self.accepts_weights:
            return {}
        with torch.device("meta"):
            module = self.build(sleep_ms)
        assert module is not None
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}


REGISTRY: dict[str, ModelSpec] = {
    "linear": ModelSpec("linear", 3, 1, True, lambda _s: SimpleModel(), True),
    "mlp": ModelSpec("mlp", MLP_SIZES[0], MLP_SIZES[-1], True, lambda _s: MLP(), True),
    "sleep": ModelSpec("sleep", 3, 1, True, lambda s: SleepModel(s), False),
    "noop": ModelSpec("noop", 3, 1, False, lambda _s: None, False),
}


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a state_dict or a metadata bundle ({'model_state': ...}) without unpickling objects."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise WeightsError(f"cannot read weights file {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state_dict (expected a dict of tensors, "
                           "or a bundle with 'model_state')")
    return obj


def check_weights(spec: ModelSpec, state: dict[str, torch.Tensor]) -> None:
    """Refuse weights whose names or shapes differ from the model, naming every mismatch."""
    if not spec.accepts_weights:
        raise WeightsError(f"model {spec.name!r} has no weights to load")
    expected = spec.expected_state_shapes()
    problems = []
    for key, shape in expected.items():
        if key not in state:
            problems.append(f"missing {key} {list(shape)}")
        elif tuple(state[key].shape) != shape:
            problems.append(f"{key}: file has {list(state[key].shape)}, model needs {list(shape)}")
    problems += [f"unexpected {key}" for key in state if key not in expected]
    if problems:
        raise WeightsError(f"weights do not fit model {spec.name!r}: " + "; ".join(problems))


def build_model(name: str, *, weights: str | None = None, sleep_ms: float = 20.0) -> nn.Module | None:
    """Build a model ready for inference (eval mode); None for the torch-free `noop`."""
    spec = REGISTRY[name]
    module = spec.build(sleep_ms)
    if module is None:
        return None
    if weights:
        state = read_state_dict(weights)
        check_weights(spec, state)
        module.load_state_dict(state)
    elif isinstance(module, SimpleModel):
        fill_article_dummy_weights(module)
    elif isinstance(module, MLP):
        seed_mlp_weights(module)
    return module.eval()


def warm_up(spec: ModelSpec, module: nn.Module | None, device: str = "cpu", rounds: int = 3) -> None:
    """Run a few forwards so the first real request does not pay for lazy init (CUDA kernels too)."""
    if module is None:
        return
    x = torch.zeros((1, spec.input_width), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for _ in range(rounds):
            module(x)


def zeros_output(rows: int, width: int) -> np.ndarray:
    return np.zeros((rows, width), dtype=np.float32)
