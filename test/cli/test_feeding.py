"""Offline training does not depend on how fast the bag is read: the same seed gives the same weights."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import torch

from deal_ros.cli import Stopped, _stop_signals
from deal_ros.cli.feeding import FrameFeeder, frames_before_step, train_until
from deal_ros.config import DealRosConfig
from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes
from deal_ros.training.trainer import OnlineTrainer

SIZE = (64, 80)
STEPS = 6


def _cfg(new_frames_per_step: int) -> DealRosConfig:
    return DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({
        "model.input_height": SIZE[0], "model.input_width": SIZE[1], "model.pretrained_path": "",
        "model.output_stride": 8, "train.batch_size": 2, "train.device": "cpu",
        "train.new_frames_per_step": new_frames_per_step, "loss.deal.enabled": True,
        "loss.deal.warmup_steps": 0, "checkpoint.directory": "unused"})


@pytest.fixture(scope="module")
def scenes():
    return make_tabletop_scenes(16, *SIZE, seed=5)


def _slowed(frames, seed: int) -> Iterator:
    """The frames, with the reader stalling 40-120 ms before a random third of them (a busy machine)."""
    rng = random.Random(seed)
    for frame in frames:
        if rng.random() < 0.35:
            time.sleep(rng.uniform(0.04, 0.12))
        yield frame


def _train(scenes, frames, new_frames_per_step: int) -> tuple[dict[str, torch.Tensor], list[float], int]:
    torch.manual_seed(123)  # a different global state must not matter either: the trainer seeds itself
    trainer = OnlineTrainer(_cfg(new_frames_per_step))
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), frames)
    losses: list[float] = []
    try:
        train_until(trainer, feeder, STEPS, lambda stats: losses.append(stats.loss))
    finally:
        feeder.stop()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, losses, feeder.frames_added


@pytest.mark.parametrize("new_frames_per_step", [1, 0])
def test_a_slow_reader_gives_the_same_weights_and_losses(scenes, new_frames_per_step) -> None:
    fast, fast_losses, fast_frames = _train(scenes, iter(scenes), new_frames_per_step)
    slow, slow_losses, slow_frames = _train(scenes, _slowed(scenes, seed=7), new_frames_per_step)
    assert fast_losses == slow_losses and len(fast_losses) == STEPS
    assert fast.keys() == slow.keys()
    assert all(torch.equal(fast[k], slow[k]) for k in fast), "the reading speed changed the weights"
    expected = len(scenes) if new_frames_per_step == 0 else 2 + (STEPS - 1) * new_frames_per_step
    assert fast_frames == slow_frames == expected, "the buffer takes in exactly what the schedule admits"


def test_schedule_starts_with_one_batch_and_grows_by_the_setting() -> None:
    assert [frames_before_step(n, 8, 16) for n in range(3)] == [8, 24, 40]
    assert frames_before_step(0, 8, 0) == frames_before_step(100, 8, 0) > 10**9  # 0: the whole bag first


def test_a_reading_error_ends_the_wait_with_that_error(scenes) -> None:
    def broken():
        yield scenes[0]
        raise OSError("bag file truncated")

    trainer = OnlineTrainer(_cfg(4))
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), broken())
    with pytest.raises(OSError, match="truncated"):
        train_until(trainer, feeder, STEPS)
    feeder.stop()


def test_a_stop_signal_ends_the_run_after_a_whole_step_and_its_record(scenes) -> None:
    """Ctrl-C inside a step: the step and its on_step finish, then Stopped (what was trained is what is recorded)."""
    trainer = OnlineTrainer(_cfg(0))
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), iter(scenes))
    recorded: list[int] = []

    def on_step(stats) -> None:
        if stats.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # before the step is recorded (SIGINT: ignored in background jobs)
        recorded.append(stats.step)

    with _stop_signals("deal-ros train"), pytest.raises(Stopped):
        try:
            train_until(trainer, feeder, STEPS, on_step)
        finally:
            feeder.stop()
    assert recorded == [1, 2] and trainer.step == 2


def test_a_stop_signal_while_waiting_for_frames_is_seen_within_a_second(scenes) -> None:
    answering = threading.Event()

    def stalls():
        yield from scenes[:2]
        answering.wait(30)  # a bag on a network share that stopped answering

    trainer = OnlineTrainer(_cfg(4))
    feeder = FrameFeeder(lambda f: trainer.add_frame(f.rgb, f.depth_m, f.tags), stalls())
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    with _stop_signals("deal-ros train"), pytest.raises(Stopped):
        timer.start()
        started = time.monotonic()
        try:
            train_until(trainer, feeder, STEPS)
        finally:
            answering.set()
            feeder.stop()
    assert time.monotonic() - started < 4.0 and trainer.step == 1
