"""Feeding bag frames into the trainer while it trains, for the offline commands (train, bench).

Frames are decoded in a background worker (deal_ros.io.bag.prefetch) and added to the trainer's buffer
from another thread, so training starts with the first batch instead of after the whole bag was read.
What a step may sample is fixed by its step number, not by how fast the bag was read: before step n the
buffer takes in exactly the bag's first batch_size + n * train.new_frames_per_step frames taken
(deal_ros.online.training_loop.frames_before_step, waiting for them if reading is slower), so the same
seed, bag and config give the same weights on a busy machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from deal_ros.cli.frames import NoFramesError
from deal_ros.online.training_loop import TrainingLoop, frames_before_step

if TYPE_CHECKING:
    from deal_ros.training.trainer import OnlineTrainer, StepStats

LOG = logging.getLogger("deal_ros.train")


class FrameFeeder:
    """Adds frames to a trainer's buffer from a worker thread, as many as the training thread admits.

    The bag is decoded ahead in prefetch's thread; this worker offers frames in bag order to `add`, which
    returns whether it took the frame (False: left out, e.g. by the keyframe gate; None counts as taken),
    until `admit(count)` frames are taken, then waits for the next admission. Errors of the source (a corrupt
    bag, a missing topic) are kept and re-raised by `check()` in the training thread, so they end the
    command with a message instead of dying in a thread.
    """

    def __init__(self, add: Callable[[Any], bool | None], frames: Iterable[Any], max_queue: int = 16) -> None:
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
                if self._add(frame) is False:
                    continue
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
        that is re-raised here); the wait is woken every second so that a stop (Ctrl-C) is seen at once.
        """
        with self._progress:
            self._admitted = max(self._admitted, count)
            self._progress.notify_all()
            while self.frames_added < count and not self.done.is_set() and not self._stop.is_set():
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

    def release(self) -> None:
        """Stop reading soon, and let a waiting `admit` return within a second; safe in a signal handler."""
        self._stop.set()

    def stop(self) -> None:
        """Stop reading (the bag is closed by the worker); returns at once if reading has ended."""
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
        self._thread.join(timeout=10.0)


def wait_for_batch(trainer: OnlineTrainer, feeder: FrameFeeder) -> None:
    """Take in the frames of the run's first step (a batch, or the whole bag); raise if the bag has none."""
    train = trainer.cfg.train
    feeder.admit(frames_before_step(0, train.batch_size, train.new_frames_per_step))
    if len(trainer.buffer) == 0:
        raise NoFramesError("no usable frames")


def train_until(trainer: OnlineTrainer, feeder: FrameFeeder, steps: int,
                on_step: Callable[[StepStats], None] | None = None,
                save: Callable[[str], Any] | None = None) -> None:
    """Run trainer steps until trainer.step == steps, starting as soon as a batch is buffered.

    The training loop of the node with the offline policies: each step first takes in the frames
    `frames_before_step` allows it, no rate cap, and LossDivergedError when training diverged (the weights
    became NaN, inf or absurdly large, checked before on_step may save them, or too many steps in a row had
    a non-finite loss). save(why): the periodic save, every checkpoint.period_steps before `steps`.
    A stop signal ends the run after the step in flight (and its on_step), then raises Stopped.
    """
    from deal_ros.cli import stop_between_steps

    wait_for_batch(trainer, feeder)
    loop = TrainingLoop(trainer, LOG, save=save, rate_cap=False, admit=feeder.admit, check_divergence=True,
                        on_step=on_step)
    def stop() -> None:
        loop.stop_after_step()
        feeder.release()

    with stop_between_steps(stop):  # Ctrl-C / SIGTERM end the run after a whole step
        loop.run(until_step=steps)
