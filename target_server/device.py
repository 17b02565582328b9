"""Where the models run: `--device cpu | cuda | auto` (auto: CUDA when this machine has it).

The gunicorn master must not initialise CUDA (a forked worker cannot use a context its parent
made), so the master asks only through NVML (PyTorch's PYTORCH_NVML_BASED_CUDA_CHECK) and each
worker puts its model on the device after the fork.
"""
from __future__ import annotations

import os

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(ValueError):
    """--device cuda on a machine without a usable CUDA device."""


def cuda_available() -> bool:
    """Whether a CUDA device is usable, without initialising CUDA in this process (fork-safe)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    """The device a worker uses: cuda or cpu (raises DeviceUnavailable for cuda without CUDA)."""
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        import torch

        built = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device or driver found"
        raise DeviceUnavailable(f"device cuda: CUDA is not available here ({built}); use --device cpu or auto")
    return "cpu"
