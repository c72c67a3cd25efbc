"""Feeding bag frames into the trainer while it trains, and the training loop of the offline commands.

Frames are decoded in a background worker (deal_ros.io.bag.prefetch) and added to the trainer's buffer
from another thread, so training starts with the first batch instead of after the whole bag was read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from deal_ros.cli import UserError
from deal_ros.cli.frames import NoFramesError

MAX_SKIPPED_IN_A_ROW = 10
"""Steps in a row with a non-finite loss (finite weights) after which training is declared diverged."""


class LossDivergedError(UserError):
    """Steps keep giving a non-finite loss: the weights are garbage and are not saved."""


class FrameFeeder:
    """Adds frames to a trainer's buffer from a worker thread; the bag is decoded in prefetch's thread.

    Errors of the source (a corrupt bag, a missing topic) are kept and re-raised by `check()` in
    the training thread, so they end the command with a message instead of dying in a thread.
    """

    def __init__(self, add: Callable[[Any], None], frames: Iterable[Any], max_queue: int = 16) -> None:
        from deal_ros.io.bag import prefetch

        self.frames_added = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._add = add
        self._source = prefetch(frames, max_queue=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deal_ros-feeder", daemon=True)
        self.start_time = time.perf_counter()
        self.end_time: float | None = None
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self._source:
                if self._stop.is_set():
                    break
                self._add(frame)
                self.frames_added += 1
        except BaseException as exc:  # handed to the training thread by check()
            self.error = exc
        finally:
            self._source.close()  # type: ignore[attr-defined]
            self.end_time = time.perf_counter()
            self.done.set()

    def check(self) -> None:
        """Re-raise the source's error in the caller's thread."""
        if self.error is not None:
            raise self.error

    @property
    def frames_per_second(self) -> float:
        elapsed = (self.end_time or time.perf_counter()) - self.start_time
        return self.frames_added / elapsed if elapsed > 0 else 0.0

    def stop(self) -> None:
        """Stop reading (the bag is closed by the worker); returns at once if reading has ended."""
        self._stop.set()
        self._thread.join(timeout=10.0)


def wait_for_batch(trainer: Any, feeder: FrameFeeder, poll_s: float = 0.02) -> None:
    """Block until the buffer holds a batch (or all frames the bag has); raise if there are none."""
    while len(trainer.buffer) < trainer.batch_size and not feeder.done.is_set():
        feeder.check()
        feeder.done.wait(poll_s)
    feeder.check()
    if len(trainer.buffer) == 0:
        raise NoFramesError("no usable frames")


def train_until(trainer: Any, feeder: FrameFeeder, steps: int, on_step: Callable[[Any], None] | None = None,
                max_skipped: int = MAX_SKIPPED_IN_A_ROW) -> None:
    """Run trainer steps until trainer.step == steps, starting as soon as a batch is buffered.

    Raises LossDivergedError when training diverged: the weights became NaN, inf or absurdly large
    (checked after every step, before on_step may save them), or `max_skipped` steps in a row had a
    non-finite loss.
    """
    from deal_ros.checkpoint import MAX_WEIGHT_ABS

    wait_for_batch(trainer, feeder)
    in_a_row = 0
    while trainer.step < steps:
        feeder.check()
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
