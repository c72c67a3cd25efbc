"""Device selection that never falls back silently."""

from __future__ import annotations

import logging

import torch

from deal_ros.errors import DealRosError

LOG = logging.getLogger(__name__)


class DeviceError(DealRosError, RuntimeError):
    """The requested device is not available."""


def resolve_device(requested: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU with a warning; 'cuda[:N]' must exist or DeviceError is raised."""
    if requested == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        else:
            LOG.warning("no CUDA device found: running on the CPU (training will be slow)")
            return torch.device("cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise DeviceError(f"unknown device {requested!r}: {exc}") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise DeviceError(f"device {requested!r} requested but CUDA is not available "
                                  f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise DeviceError(f"device {requested!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        elif device.type != "cpu":
            raise DeviceError(f"device {requested!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def describe_device(device: torch.device) -> str:
    """One line for logs and diagnostics: the device name and, on CUDA, its memory in use."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        used_mb = torch.cuda.memory_allocated(index) / 2**20
        total_mb = torch.cuda.get_device_properties(index).total_memory / 2**20
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {used_mb:.0f}/{total_mb:.0f} MiB)"
    return f"cpu ({torch.get_num_threads()} threads)"
