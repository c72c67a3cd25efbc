"""Training and inference in one process without either waiting for the other.

The segmenter runs its own copy of the network; the trainer hands it a weight snapshot after its
optimiser updates (`WeightHandoff`), so inference never waits for a training step (seconds on a
CPU). A step in flight can be stopped between two layers (`StepControl`): shutdown and pause do
not wait for it, and on the CPU the training thread can step aside at its next layer while the
segmenter processes a camera frame, so masks keep the camera's rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class TrainingInterrupted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised at a layer boundary of a training step that must be abandoned (weights are untouched)."""


class StepControl:
    """Checkpoints at the layer boundaries of a training step: forward pre-hooks and gradient hooks.

    - `interrupt(reason)`: the step in flight (and every later one, until every reason is
      `resume`d) raises TrainingInterrupted at its next layer; the optimiser has not run, so the
      weights stay as they were. Reasons ('pause', 'stop', 'reset') are independent.
    - `inference()`: a segmenter wraps each frame in it; while one is running the training thread
      waits at its next layer, for at most `yield_share` of the step's time (0 = never: on CUDA the
      segmenter has its own stream) and `max_yield_s` per wait. The share keeps a segmenter that is
      busy all the time (inference slower than the camera) from starving training: each waits for
      the other about equally at 0.5, and inference goes first whenever it leaves time over.

    Hooks act only in the thread inside `stepping()`: anyone else running the same model (an
    evaluation, a demo) is unaffected.
    """

    def __init__(self, yield_share: float = 0.0, max_yield_s: float = 1.0) -> None:
        if not 0.0 <= yield_share < 1.0:
            raise ValueError(f"yield_share must be in [0, 1), got {yield_share}")
        self.yield_share = yield_share
        self.max_yield_s = max_yield_s
        self._cond = threading.Condition()
        self._busy = 0
        self._reasons: set[str] = set()
        self._owner: int | None = None
        self._step_start = 0.0
        self._step_yield_s = 0.0
        self.yield_s = 0.0
        """Total seconds the training thread waited for inference."""

    def attach(self, model: nn.Module) -> list[RemovableHandle]:
        """Hook every module holding parameters, its children's included (forward: a fused block may call its
        convs' kernels directly, so blocks count too), and every parameter (backward); returns the handles."""
        handles: list[RemovableHandle] = []
        for module in model.modules():
            if any(True for _ in module.parameters()):
                handles.append(module.register_forward_pre_hook(self._forward_hook))
        for param in model.parameters():
            if param.requires_grad:
                handles.append(param.register_hook(self._grad_hook))
        return handles

    def _forward_hook(self, module: nn.Module, inputs: tuple[object, ...]) -> None:
        self.checkpoint()

    def _grad_hook(self, grad: torch.Tensor) -> None:
        self.checkpoint()

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        """Mark the calling thread as the one running a training step (the only one the hooks act in)."""
        self._owner = threading.get_ident()
        self._step_start, self._step_yield_s = time.monotonic(), 0.0
        try:
            self.checkpoint()
            yield
        finally:
            self._owner = None

    def checkpoint(self) -> None:
        """Raise TrainingInterrupted if interrupted; wait while inference runs (when yielding)."""
        if self._owner != threading.get_ident():
            return
        if self._reasons:
            raise TrainingInterrupted(f"training step interrupted ({', '.join(sorted(self._reasons))})")
        if not (self.yield_share > 0 and self._busy):
            return
        start = time.monotonic()
        worked_s = start - self._step_start - self._step_yield_s
        budget_s = self.yield_share / (1.0 - self.yield_share) * worked_s - self._step_yield_s
        if budget_s <= 0:
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._busy or self._reasons, timeout=min(budget_s, self.max_yield_s))
        waited = time.monotonic() - start
        self._step_yield_s += waited
        self.yield_s += waited
        if self._reasons:
            raise TrainingInterrupted(f"training step interrupted ({', '.join(sorted(self._reasons))})")

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Wrap one inference: training steps aside meanwhile (up to `yield_share` of its time)."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def interrupt(self, reason: str) -> None:
        with self._cond:
            self._reasons.add(reason)
            self._cond.notify_all()

    def resume(self, reason: str) -> None:
        with self._cond:
            self._reasons.discard(reason)

    @property
    def interrupted(self) -> bool:
        return bool(self._reasons)


@dataclass
class WeightSnapshot:
    """A consistent copy of a model's state after an optimiser update."""

    step: int
    state: dict[str, torch.Tensor]
    ready: torch.cuda.Event | None = None
    """CUDA event recorded after the copy (None on the CPU): a reader on another stream waits for it."""
    trusted: bool = False
    """Whether the trainer trusted the masks of these weights (deal_ros.training.trust)."""
    representatives: np.ndarray | None = None
    """(K,) int64: the classes the trainer's tags cannot tell apart, each as its group's first member
    (deal_ros.labels.class_groups); None when there are none."""


def snapshot_state(model: nn.Module, step: int, trusted: bool = False, representatives: np.ndarray | None = None,
                   ) -> WeightSnapshot:
    """Detached copies of `model`'s parameters and buffers (call with the model's lock held)."""
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    ready = None
    device = next(iter(state.values())).device if state else torch.device("cpu")
    if device.type == "cuda":
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(device))
    return WeightSnapshot(step, state, ready, trusted, representatives)


class WeightHandoff:
    """Mailbox of the newest weight snapshot, trainer -> in-process segmenter (the newer replaces the older)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: WeightSnapshot | None = None
        self.published = 0
        self.taken = 0

    def publish(self, snapshot: WeightSnapshot) -> None:
        with self._lock:
            self._pending = snapshot
            self.published += 1

    def take(self) -> WeightSnapshot | None:
        """The newest snapshot not taken yet, or None."""
        with self._lock:
            snapshot, self._pending = self._pending, None
            if snapshot is not None:
                self.taken += 1
            return snapshot
