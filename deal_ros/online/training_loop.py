"""Keyframes in and the one training loop, without rclpy: what the trainer node and `deal-ros train` share.

`KeyframeIntake` takes every frame offered (a synchronised pair from the camera, a frame read from a
bag): the keyframe gate (a time check, then a 32x24 thumbnail) and, for the few accepted frames, the
depth check and the buffer. A keyframe whose depth has no valid pixel or one constant value is counted
and left out (deal_ros.frames.checks: DEAL would learn "no edges" from it).

`TrainingLoop` trains while allowed, with its policies explicit: the rate cap (train.max_steps_per_second),
run-time config applied between steps, pause, weights handed to an in-process segmenter after every N
steps, a periodic save (checkpoint.period_steps), the admission schedule of a bag (`frames_before_step`:
what step n may sample is fixed by n, so a seed gives the same weights however fast the bag is read) and
the divergence check. The node runs it in a worker thread (`start`; a failed step pauses it), `deal-ros
train` in its main thread (`run`; errors and Ctrl-C propagate). Pause and stop abandon the step in flight
at its next layer (deal_ros.compute.live), so neither waits for a step that takes seconds on a CPU.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from deal_ros.config import ConfigError
from deal_ros.errors import DegenerateDataError, UserError
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.status import RateLimiter, RateMeter

if TYPE_CHECKING:
    from deal_ros.compute.live import WeightHandoff
    from deal_ros.training.trainer import OnlineTrainer, StepStats

MAX_SKIPPED_IN_A_ROW = 10
"""Steps in a row with a non-finite loss (finite weights) after which training is declared diverged."""

ALL_FRAMES = sys.maxsize
"""The admission that takes in every frame (train.new_frames_per_step 0: the whole bag first)."""


class Logger(Protocol):
    """What the loop logs to: an rclpy logger or a logging.Logger."""

    def info(self, message: str, /) -> Any: ...

    def warning(self, message: str, /) -> Any: ...

    def error(self, message: str, /) -> Any: ...


class LossDivergedError(UserError):
    """Steps keep giving a non-finite loss, or the weights became NaN / inf: they are not saved."""


def frames_before_step(steps_done: int, batch_size: int, new_frames_per_step: int) -> int:
    """How many of the bag's frames the buffer holds before the run's step `steps_done` (0-based)."""
    if new_frames_per_step == 0:
        return ALL_FRAMES
    return batch_size + steps_done * new_frames_per_step


OTHER_SHARE = "another process's share"
"""IntakeResult.reason of a keyframe that another rank of a torchrun job buffers."""


@dataclass
class IntakeResult:
    accepted: bool
    reason: str
    degenerate: str = ""
    """Why the depth of a frame the gate took was unusable ('' = fine); such a frame is not buffered."""


class KeyframeIntake:
    """Per frame offered: gate it, and put an accepted frame (with its tags) into the trainer's buffer.

    keep(k): whether this process buffers the k-th keyframe (0-based); a rank of an N-process job keeps
    every N-th, after gating every frame as one process would, so the job trains on the same keyframes.
    """

    def __init__(self, trainer: OnlineTrainer, gate: KeyframeGate, keep: Callable[[int], bool] | None = None) -> None:
        self.trainer = trainer
        self.gate = gate
        self.keep = keep
        self.keyframes = 0
        self.offered = 0
        self.buffered = 0
        self.degenerate = 0
        self._lock = threading.Lock()  # held for counters and the gate only, never across a wait

    def offer(self, stamp_s: float, rgb: Callable[[], np.ndarray], depth_m: Callable[[], np.ndarray],
              tags: Sequence[str]) -> IntakeResult:
        """rgb / depth_m decode the frame's images (called only when needed); raises what they raise."""
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
            index, self.keyframes = self.keyframes, self.keyframes + 1
            if self.keep is not None and not self.keep(index):
                self.trainer.note_tags(list(tags))  # another rank trains on it; every rank's class groups see it
                return IntakeResult(False, OTHER_SHARE)
            try:  # the trainer checks the depth once, as for every frame given to it
                self.trainer.add_frame(rgb_once(), depth_m(), list(tags))
            except DegenerateDataError as problem:
                self.degenerate += 1
                return IntakeResult(False, "unusable depth", str(problem))
            self.buffered += 1
            return IntakeResult(True, decision.reason)


class TrainingLoop:
    """The training driver: `run` (this thread) or `start` (a worker thread); `set_paused`, `request_config`, `stop`.

    ready(): whether training is allowed now (the node: tags known). save(why): write a checkpoint, called
    every checkpoint.period_steps in the loop's thread. rate_cap: keep to train.max_steps_per_second. admit(n):
    let the buffer take in the first n frames of the source before the step that needs them (the bag's
    schedule, frames_before_step; None: frames come when they come). check_divergence: raise LossDivergedError
    when the weights diverged or MAX_SKIPPED_IN_A_ROW steps in a row had a non-finite loss. on_step(stats):
    after every step taken, before its hand-off and save.
    """

    def __init__(self, trainer: OnlineTrainer, log: Logger, ready: Callable[[], bool] = lambda: True,
                 save: Callable[[str], Any] | None = None, handoff: WeightHandoff | None = None,
                 sync_every_steps: int = 1, *, rate_cap: bool = True, admit: Callable[[int], None] | None = None,
                 check_divergence: bool = False, on_step: Callable[[StepStats], None] | None = None) -> None:
        self.trainer = trainer
        self.log = log
        self.ready = ready
        self.save = save
        self.handoff = handoff
        self.sync_every_steps = sync_every_steps
        self.admit = admit
        self.check_divergence = check_divergence
        self.on_step = on_step
        self.limiter = RateLimiter(trainer.cfg.train.max_steps_per_second) if rate_cap else None
        self.step_rate = RateMeter()
        self.last_stats: dict[str, Any] | None = None
        self._paused = False
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()  # held for a dict swap only, never across a wait
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._work, name="deal_trainer_worker", daemon=True)

    # -- control (any thread) ---------------------------------------------------------------------------
    def start(self) -> None:
        """Run in a worker thread until stopped; a step that fails is logged and pauses the loop."""
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
        """Run-time config changes, applied by the loop between steps (never mid-step)."""
        with self._pending_lock:
            self._pending.update(overrides)
        self._wake.set()

    def wake(self) -> None:
        """A keyframe arrived: an idle loop starts training without waiting for its poll."""
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

    def stop_after_step(self) -> None:
        """Stop once the step in flight is done (and recorded); returns at once. Every rank of a job finishes it."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """request_stop, then wait up to timeout_s for the worker; True when it ended."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self, until_step: int | None = None) -> None:
        """Train in this thread until trainer.step == until_step (None: until stopped); errors propagate.

        The periodic save skips until_step itself: the caller saves at the end.
        """
        self._loop(until_step, pause_on_error=False)

    def _work(self) -> None:
        self._loop(None, pause_on_error=True)

    def _loop(self, until_step: int | None, pause_on_error: bool) -> None:
        trainer = self.trainer
        start_step = trainer.step
        in_a_row = 0  # steps skipped for a non-finite loss
        while not self._stop.is_set() and (until_step is None or trainer.step < until_step):
            self._apply_pending()
            if self.admit is not None:
                train = trainer.cfg.train
                self.admit(frames_before_step(trainer.step - start_step, train.batch_size, train.new_frames_per_step))
                if self._stop.is_set():  # stopped while waiting for frames
                    break
            if self._paused or not self.ready() or len(trainer.buffer) == 0:
                self._idle(0.2)
                continue
            if self.limiter is not None:
                wait_s = self.limiter.wait_s(time.monotonic())
                if wait_s > 0:
                    self._stop.wait(min(wait_s, 0.2))
                    continue
                self.limiter.mark(time.monotonic())
            skipped = trainer.skipped_steps
            try:
                stats = trainer.train_step()
            except Exception as exc:  # e.g. OOM at batch size 1: stop training, keep the node up
                if not pause_on_error:
                    raise
                self.log.error(f"training step failed: {exc!r}; pausing (call ~/pause false to retry)")
                self.set_paused(True)
                continue
            in_a_row = in_a_row + 1 if trainer.skipped_steps > skipped else 0
            if self.check_divergence:
                self._check_divergence(stats is not None, in_a_row)
            if stats is None:
                continue
            self._after_step(stats, until_step)

    def _check_divergence(self, stepped: bool, in_a_row: int) -> None:
        """Raise LossDivergedError when the weights are garbage (checked before on_step may save them)."""
        from deal_ros.storage.checkpoint import MAX_WEIGHT_ABS

        trainer = self.trainer
        lower = f"lower train.lr (now {trainer.cfg.train.lr:g}) or the loss weights"
        if (stepped or in_a_row) and trainer.weights_diverged():
            raise LossDivergedError(f"training diverged at step {trainer.step}: the weights are NaN, inf or "
                                    f"> {MAX_WEIGHT_ABS:g}; {lower}")
        if in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise LossDivergedError(f"training diverged at step {trainer.step}: {in_a_row} steps in a row had a "
                                    f"non-finite loss; {lower}")

    def _after_step(self, stats: StepStats, until_step: int | None) -> None:
        self.step_rate.tick()
        self.last_stats = stats.as_dict()
        if self.on_step is not None:
            self.on_step(stats)
        if self.handoff is not None and stats.step % self.sync_every_steps == 0:
            self.handoff.publish(self.trainer.weight_snapshot())
        period = self.trainer.cfg.checkpoint.period_steps
        if (self.save is not None and period > 0 and stats.step % period == 0 and not self._stop.is_set()
                and (until_step is None or stats.step < until_step)):
            self.save("period")

    def _idle(self, timeout_s: float) -> None:
        self._wake.wait(timeout_s)
        self._wake.clear()

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
        if self.limiter is not None:
            self.limiter.max_per_s = self.trainer.cfg.train.max_steps_per_second
        self.log.info(f"config updated: {overrides}")
