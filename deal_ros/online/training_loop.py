"""The trainer node's work without rclpy: keyframes in from the callback, steps in a worker thread.

`KeyframeIntake` runs in the synchronised-pair callback for every pair: the keyframe gate (a time
check, then a 32x24 thumbnail) and, for the few accepted frames, the depth check and the buffer,
so no keyframe waits for a training step. A keyframe whose depth has no valid pixel or one constant
value is counted and left out (deal_ros.frames.checks: DEAL would learn "no edges" from it).
`TrainingLoop` is the worker: it trains at a capped rate while allowed, applies run-time config
between steps, hands weights to an in-process segmenter after every N steps and checkpoints
periodically; pause and stop abandon the step in flight at its next layer (deal_ros.compute.live), so
neither waits for a step that takes seconds on a CPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deal_ros.compute.live import WeightHandoff
from deal_ros.config import ConfigError
from deal_ros.frames.checks import depth_problem
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.status import RateLimiter, RateMeter


@dataclass
class IntakeResult:
    accepted: bool
    reason: str
    degenerate: str = ""
    """Why the depth of a frame the gate took was unusable ('' = fine); such a frame is not buffered."""


class KeyframeIntake:
    """Per synchronised pair: gate it, and put an accepted frame (with its tags) into the trainer's buffer."""

    def __init__(self, trainer: Any, gate: KeyframeGate) -> None:
        self.trainer = trainer
        self.gate = gate
        self.offered = 0
        self.buffered = 0
        self.degenerate = 0
        self._lock = threading.Lock()  # held for counters and the gate only, never across a wait

    def offer(self, stamp_s: float, rgb: Callable[[], np.ndarray], depth_m: Callable[[], np.ndarray],
              tags: Sequence[str]) -> IntakeResult:
        """rgb / depth_m decode the pair's images (called only when needed); raises what they raise."""
        decoded: list[np.ndarray] = []

        def rgb_once() -> np.ndarray:
            if not decoded:
                decoded.append(rgb())
            return decoded[0]

        with self._lock:
            self.offered += 1
            decision = self.gate.decide(stamp_s, rgb_once, tags)
            if not decision.accept:
                return IntakeResult(False, decision.reason)
            depth = depth_m()
            problem = depth_problem(depth, "depth")
            if problem is not None:
                self.degenerate += 1
                return IntakeResult(False, "unusable depth", str(problem))
            self.trainer.add_frame(rgb_once(), depth, list(tags))
            self.buffered += 1
            return IntakeResult(True, decision.reason)


class TrainingLoop:
    """Worker thread of the trainer node: `start`, `set_paused`, `request_config`, `stop`.

    log: anything with info / warning / error(str) (an rclpy or a logging logger); ready(): whether
    training is allowed now (tags known); save(why): write a checkpoint (called every
    checkpoint.period_steps, in this thread).
    """

    def __init__(self, trainer: Any, log: Any, ready: Callable[[], bool], save: Callable[[str], Any],
                 handoff: WeightHandoff | None = None, sync_every_steps: int = 1) -> None:
        self.trainer = trainer
        self.log = log
        self.ready = ready
        self.save = save
        self.handoff = handoff
        self.sync_every_steps = sync_every_steps
        self.limiter = RateLimiter(trainer.cfg.train.max_steps_per_second)
        self.step_rate = RateMeter()
        self.last_stats: dict[str, Any] | None = None
        self._paused = False
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()  # held for a dict swap only, never across a wait
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deal_trainer_worker", daemon=True)

    # -- control (any thread) ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """Pause abandons the step in flight at its next layer (its update is not applied)."""
        self._paused = paused
        if paused:
            self.trainer.control.interrupt("pause")
        else:
            self.trainer.control.resume("pause")
        self._wake.set()

    def request_config(self, overrides: dict[str, Any]) -> None:
        """Run-time config changes, applied by the worker between steps (never mid-step)."""
        with self._pending_lock:
            self._pending.update(overrides)
        self._wake.set()

    def wake(self) -> None:
        """A keyframe arrived: an idle worker starts training without waiting for its poll."""
        self._wake.set()

    def publish_weights(self) -> None:
        """Hand the current weights to the in-process segmenter now (start-up, after reset)."""
        if self.handoff is not None:
            self.handoff.publish(self.trainer.weight_snapshot())

    def request_stop(self) -> None:
        """Stop soon: the step in flight stops at its next layer; returns at once."""
        self._stop.set()
        self.trainer.control.interrupt("stop")
        self._wake.set()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """request_stop, then wait up to timeout_s for the worker; True when it ended."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    # -- the worker -------------------------------------------------------------------------------------
    def _idle(self, timeout_s: float) -> None:
        self._wake.wait(timeout_s)
        self._wake.clear()

    def _run(self) -> None:
        trainer = self.trainer
        while not self._stop.is_set():
            self._apply_pending()
            if self._paused or not self.ready() or len(trainer.buffer) == 0:
                self._idle(0.2)
                continue
            wait_s = self.limiter.wait_s(time.monotonic())
            if wait_s > 0:
                self._stop.wait(min(wait_s, 0.2))
                continue
            self.limiter.mark(time.monotonic())
            try:
                stats = trainer.train_step()
            except Exception as exc:  # e.g. OOM at batch size 1: stop training, keep the node up
                self.log.error(f"training step failed: {exc!r}; pausing (call ~/pause false to retry)")
                self.set_paused(True)
                continue
            if stats is None:
                continue
            self.step_rate.tick()
            self.last_stats = stats.as_dict()
            if self.handoff is not None and stats.step % self.sync_every_steps == 0:
                self.handoff.publish(trainer.weight_snapshot())
            period = trainer.cfg.checkpoint.period_steps
            if period > 0 and stats.step % period == 0 and not self._stop.is_set():
                self.save("period")

    def _apply_pending(self) -> None:
        with self._pending_lock:
            overrides, self._pending = self._pending, {}
        if not overrides:
            return
        try:
            self.trainer.update_config(overrides)
        except ConfigError as exc:
            self.log.error(f"config update {overrides} refused: {exc}")
            return
        self.limiter.max_per_s = self.trainer.cfg.train.max_steps_per_second
        self.log.info(f"config updated: {overrides}")
