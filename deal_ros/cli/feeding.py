"""Feeding bag frames into the trainer while it trains, and the training loop of the offline commands.

Frames are decoded in a background worker (deal_ros.io.bag.prefetch) and added to the trainer's buffer
from another thread, so training starts with the first batch instead of after the whole bag was read.
What a step may sample is fixed by its step number, not by how fast the bag was read: before step n the
buffer takes in exactly the bag's first batch_size + n * train.new_frames_per_step frames (waiting for
them if reading is slower), so the same seed, bag and config give the same weights on a busy machine.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from deal_ros.cli import UserError
from deal_ros.cli.frames import NoFramesError

MAX_SKIPPED_IN_A_ROW = 10
"""Steps in a row with a non-finite loss (finite weights) after which training is declared diverged."""

ALL_FRAMES = sys.maxsize
"""`FrameFeeder.admit` count that takes in the whole bag."""


class LossDivergedError(UserError):
    """Steps keep giving a non-finite loss: the weights are garbage and are not saved."""


class FrameFeeder:
    """Adds frames to a trainer's buffer from a worker thread, as many as the training thread admits.

    The bag is decoded ahead in prefetch's thread; this worker adds frames in bag order until
    `admit(count)` frames are in, then waits for the next admission. Errors of the source (a corrupt
    bag, a missing topic) are kept and re-raised by `check()` in the training thread, so they end the
    command with a message instead of dying in a thread.
    """

    def __init__(self, add: Callable[[Any], None], frames: Iterable[Any], max_queue: int = 16) -> None:
        from deal_ros.io.bag import prefetch

        self.frames_added = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._add = add
        self._source = prefetch(frames, max_queue=max_queue)
        self._stop = threading.Event()
        self._admitted = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="deal_ros-feeder", daemon=True)
        self.start_time = time.perf_counter()
        self.end_time: float | None = None
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self._source:
                with self._progress:  # waits for the training thread's next admission: no deadline needed
                    while self.frames_added >= self._admitted and not self._stop.is_set():
                        self._progress.wait()
                if self._stop.is_set():
                    break
                self._add(frame)
                with self._progress:
                    self.frames_added += 1
                    self._progress.notify_all()
        except BaseException as exc:  # handed to the training thread by check()
            self.error = exc
        finally:
            self._source.close()  # type: ignore[attr-defined]
            self.end_time = time.perf_counter()
            with self._progress:
                self.done.set()
                self._progress.notify_all()

    def admit(self, count: int) -> None:
        """Let the buffer take in the bag's first `count` frames; return when it has (or the bag ended).

        Waits as long as the bag is being read: reading either yields a frame or ends (with an error
        that is re-raised here); the wait is woken every second so that Ctrl-C is seen at once.
        """
        with self._progress:
            self._admitted = max(self._admitted, count)
            self._progress.notify_all()
            while self.frames_added < count and not self.done.is_set():
                self._progress.wait(timeout=1.0)
        self.check()

    def check(self) -> None:
        """Re-raise the source's error in the caller's thread."""
        if self.error is not None:
            raise self.error

    @property
    def frames_per_second(self) -> float:
        """Frames taken in per second since the bag was opened (bounded by the admissions, not by reading alone)."""
        elapsed = (self.end_time or time.perf_counter()) - self.start_time
        return self.frames_added / elapsed if elapsed > 0 else 0.0

    def stop(self) -> None:
        """Stop reading (the bag is closed by the worker); returns at once if reading has ended."""
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
        self._thread.join(timeout=10.0)


def frames_before_step(steps_done: int, batch_size: int, new_frames_per_step: int) -> int:
    """How many of the bag's frames the buffer holds before the run's step `steps_done` (0-based)."""
    if new_frames_per_step == 0:
        return ALL_FRAMES
    return batch_size + steps_done * new_frames_per_step


def wait_for_batch(trainer: Any, feeder: FrameFeeder) -> None:
    """Take in the frames of the run's first step (a batch, or the whole bag); raise if the bag has none."""
    train = trainer.cfg.train
    feeder.admit(frames_before_step(0, train.batch_size, train.new_frames_per_step))
    if len(trainer.buffer) == 0:
        raise NoFramesError("no usable frames")


def train_until(trainer: Any, feeder: FrameFeeder, steps: int, on_step: Callable[[Any], None] | None = None,
                max_skipped: int = MAX_SKIPPED_IN_A_ROW) -> None:
    """Run trainer steps until trainer.step == steps, starting as soon as a batch is buffered.

    Each step first takes in the frames `frames_before_step` allows it, so the run does not depend on
    how fast the bag is read.

    Raises LossDivergedError when training diverged: the weights became NaN, inf or absurdly large
    (checked after every step, before on_step may save them), or `max_skipped` steps in a row had a
    non-finite loss.
    """
    from deal_ros.storage.checkpoint import MAX_WEIGHT_ABS

    wait_for_batch(trainer, feeder)
    train = trainer.cfg.train
    start_step = trainer.step
    in_a_row = 0
    while trainer.step < steps:
        feeder.admit(frames_before_step(trainer.step - start_step, train.batch_size, train.new_frames_per_step))
        skipped = trainer.skipped_steps
        stats = trainer.train_step()
        in_a_row = in_a_row + 1 if trainer.skipped_steps > skipped else 0
        if (stats is not None or in_a_row) and trainer.weights_diverged():
            raise LossDivergedError(f"training diverged at step {trainer.step}: the weights are NaN, inf or "
                                    f"> {MAX_WEIGHT_ABS:g}; {_lower_lr(trainer)}")
        if in_a_row >= max_skipped:
            raise LossDivergedError(f"training diverged at step {trainer.step}: {in_a_row} steps in a row had a "
                                    f"non-finite loss; {_lower_lr(trainer)}")
        if stats is not None and on_step is not None:
            on_step(stats)


def _lower_lr(trainer: Any) -> str:
    return f"lower train.lr (now {trainer.cfg.train.lr:g}) or the loss weights"
