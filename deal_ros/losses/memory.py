"""Peak tensor memory of a computation, on any device: the measure behind the FSL memory claims.

On CUDA, the caching allocator's peak is exact (:func:`torch.cuda.max_memory_allocated`). On CPU there
is no allocator statistic, so :class:`TensorMemoryTracker` accounts tensor storages itself: every new
storage an op returns counts while its Python tensor lives, and every tensor autograd saves for backward
counts until the tracker ends (it lives at least until backward). The peak of that sum is what the
computation allocated beyond its inputs, the quantity that matters for an O(h w window) vs O((h w)^2) claim.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class TensorMemoryTracker(TorchDispatchMode):
    """Context manager; ``peak_bytes`` = peak of live op outputs + saved-for-backward tensors (unique storages)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.saved: dict[int, int] = {}
        self.current = 0
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _add(self, key: int, nbytes: int) -> None:
        self.current += nbytes
        self.peak_bytes = max(self.peak_bytes, self.current)

    def _release(self, key: int) -> None:
        nbytes = self.live.pop(key, 0)
        if key not in self.saved:
            self.current -= nbytes

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key and key not in self.saved:
            self.saved[key] = storage.nbytes()
            if key not in self.live:
                self._add(key, storage.nbytes())
        return tensor

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if not key or key in self.live or key in self.saved:
                continue
            self.live[key] = storage.nbytes()
            self._add(key, storage.nbytes())
            weakref.finalize(tensor, self._release, key)
        return out

    def __enter__(self) -> TensorMemoryTracker:
        self._hooks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._hooks.__exit__(*exc)


def peak_tensor_bytes(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated while running ``fn()`` (forward, with what it keeps for backward)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    with TensorMemoryTracker() as tracker:
        result = fn()
        del result
    return tracker.peak_bytes
