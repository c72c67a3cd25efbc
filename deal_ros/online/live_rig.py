"""The onboard process without rclpy: trainer and segmenter in one process, wired as the nodes wire them.

Why: what a planner gets from /deal/mask while the robot looks (how good, how soon, how often) depends on
the whole live path, not on a training run: the keyframe gate and the buffer in the pair callback, the
training loop in its worker thread with the rate cap and the weight hand-off, the segmenter's own copy of
the network on the newest pair only, the CPU share between them, the warm-up rule. `LiveRig` is that path
(deal_ros/ros/onboard.py, trainer_node.py, segmenter_node.py) with the same classes and the nodes' parameter
defaults; `play` feeds it timed frames (a bag, a synthetic stream) on their own clock, at a rate. `deal-ros
bench live` and scripts/bench_live.py measure it.

Not wired here: checkpoint saves (the node writes one every checkpoint.period_steps; a bench has no use for
them), status topics, and the pseudo-label output (computed by the node only while someone subscribes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deal_ros.compute.live import TrainingInterrupted, WeightHandoff
from deal_ros.config import ConfigError, DealRosConfig
from deal_ros.inference.segmenter import Segmenter
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.parameters import SEGMENTER, TRAINER, ParamSpec, node_param_specs, parameter_value
from deal_ros.online.slot import LatestSlot
from deal_ros.online.status import warming_up
from deal_ros.online.training_loop import IntakeResult, KeyframeIntake, Logger, TrainingLoop
from deal_ros.training.trainer import OnlineTrainer, StepStats

LOG = logging.getLogger("deal_ros.live")


def _node_specs() -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in (*node_param_specs(TRAINER), *node_param_specs(SEGMENTER))}


def node_values(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Both nodes' own parameters (NodeParameters: inference_priority, weights_sync_steps, mask.*, ...) by dotted
    name: their defaults, then `overrides` checked as `ros2 param set` checks them (ConfigError naming the key)."""
    specs = _node_specs()
    values = {name: spec.default for name, spec in specs.items()}
    for name, value in (overrides or {}).items():
        if name not in specs:
            raise ConfigError(f"unknown node parameter '{name}'; known: {', '.join(sorted(specs))}")
        values[name] = parameter_value(specs[name], value)
    return values


def is_node_parameter(name: str) -> bool:
    """Whether a dotted name is one of the nodes' own parameters (not a DealRosConfig key)."""
    return name in _node_specs()


@dataclass
class LiveMask:
    """One frame the segmenter processed: its mask and whether the node would publish it on deal/mask."""

    frame: Any
    """What `offer` was given with the pair (the caller's record of the frame: index, stamp)."""
    mask: np.ndarray
    """(H, W) uint8 class ids at the frame's size."""
    model_step: int
    """Training step of the weights that made it (-1 = the initial weights)."""
    published: bool
    """False while warming up with mask.while_warming_up 'withhold' (the node publishes nothing on deal/mask)."""
    offered_s: float
    """time.monotonic() when the pair was offered (its arrival)."""
    done_s: float
    """time.monotonic() when the mask was ready (the node publishes it then)."""
    inference_s: float


class LiveRig:
    """Trainer + segmenter as `ros2 launch deal_ros onboard.launch.py` runs them; `offer` is the pair callbacks.

    cfg: the config both nodes get; node: their own parameters where they differ from the defaults (node_values).
    on_mask(LiveMask) runs in the segmenter's thread after each frame; on_step(StepStats) in the training thread
    after each step. Tags: what the tags parameter / topic says now (None = not known yet: no training, as the
    trainer node waits for tags); frames are segmented either way.
    """

    def __init__(self, cfg: DealRosConfig, node: Mapping[str, Any] | None = None, log: Logger = LOG,
                 on_mask: Callable[[LiveMask], None] | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> None:
        self.values = node_values(node)
        self.trainer = OnlineTrainer(cfg)
        self.gate = KeyframeGate.from_config(cfg.keyframe)
        self.intake = KeyframeIntake(self.trainer, self.gate)
        self.tags_known = False
        self.loop = TrainingLoop(self.trainer, log, ready=lambda: self.tags_known, save=None,
                                 sync_every_steps=self.values["weights_sync_steps"], on_step=on_step)
        share = self.values["inference_priority"]
        self.trainer.control.yield_share = share if self.trainer.device.type == "cpu" else 0.0
        self.loop.handoff = WeightHandoff()  # TrainerNode.share_weights
        self.loop.publish_weights()
        self.segmenter = Segmenter(cfg, device=self.trainer.device, model_lock=threading.RLock(),
                                   weights=self.loop.handoff, control=self.trainer.control)
        self.segmenter.refresh()
        self.segmenter.part_bank = self.trainer.part_bank
        self.on_mask = on_mask
        self.slot: LatestSlot[tuple[Any, np.ndarray, np.ndarray]] = LatestSlot()
        self.frames_segmented = 0
        self.masks_withheld = 0
        self._stop = threading.Event()
        self._pairs_kept = 0
        """Pairs put in the slot and not replaced there by a newer one before the segmenter took them."""
        self._pairs_done = 0
        self._worker = threading.Thread(target=self._segment, name="deal_segmenter_worker", daemon=True)

    def start(self) -> None:
        self.loop.start()
        self._worker.start()

    def offer(self, stamp_s: float, rgb: np.ndarray, depth_m: np.ndarray, tags: Sequence[str] | None,
              frame: Any = None) -> IntakeResult | None:
        """One synchronised pair, as both nodes' pair callbacks take it: the trainer gates it (when tags are known),
        the segmenter's slot keeps it (the newest wins). Returns the intake's verdict (None: tags unknown)."""
        result = None
        if tags is not None:
            self.tags_known = True
            result = self.intake.offer(stamp_s, lambda: rgb, lambda: depth_m, tags)
            if result.accepted:
                self.loop.wake()
        replaced = self.slot.put((frame, rgb, depth_m))
        self._pairs_kept += 1 - int(replaced)
        return result

    def _segment(self) -> None:
        min_step = self.values["mask.min_model_step"]
        withhold = self.values["mask.while_warming_up"] == "withhold"
        while not self._stop.is_set():
            taken = self.slot.take(timeout=0.2)
            if taken is None:
                continue
            frame, rgb, depth_m = taken.item
            started = time.monotonic()
            try:
                result = self.segmenter(rgb, depth_m)
            except TrainingInterrupted:  # stopping: the frame in flight ends at its next layer
                return
            done = time.monotonic()
            published = not (withhold and warming_up(self.segmenter.step, min_step))
            self.frames_segmented += 1
            self.masks_withheld += not published
            if self.on_mask is not None:
                self.on_mask(LiveMask(frame, result.mask, self.segmenter.step, published, taken.put_time, done,
                                      done - started))
            self._pairs_done += 1

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (at most timeout_s) until the segmenter has taken and finished the newest pair: a stream's end."""
        end = time.monotonic() + timeout_s
        while self._pairs_done < self._pairs_kept and time.monotonic() < end and self._worker.is_alive():
            time.sleep(0.01)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop training (the step in flight ends at its next layer) and the segmenter thread."""
        self._stop.set()
        self.slot.close()
        self.segmenter.interrupt()
        self.loop.stop(timeout_s=timeout_s)
        if self._worker.is_alive():
            self._worker.join(timeout=timeout_s)


class TimedFrame(Protocol):
    """A frame to play (deal_ros.io.bag.RGBDFrame): stamp, images, tags."""

    stamp_ns: int
    rgb: np.ndarray
    depth_m: np.ndarray
    tags: list[str]
    tags_known: bool


@dataclass
class Played:
    """What `play` did: frames offered, when the first was (time.monotonic()), how far it fell behind."""

    frames: int
    start_s: float
    end_s: float
    max_late_s: float
    """Largest delay of an offer behind its due time (a reader slower than the rate)."""


def play(rig: LiveRig, frames: Iterable[TimedFrame], rate: float = 1.0, stop: threading.Event | None = None,
         on_offer: Callable[[TimedFrame, float], None] | None = None) -> Played:
    """Offer `frames` to the rig on their stamps' clock sped up by `rate` (ros2 bag play --rate), in this thread.

    A frame is offered when its time comes (never early; late when the reader falls behind, then at once).
    on_offer(frame, offered_s) runs just before each offer.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    stop = stop or threading.Event()
    count, start, first_stamp, late = 0, time.monotonic(), None, 0.0
    for frame in frames:
        if first_stamp is None:
            first_stamp, start = frame.stamp_ns, time.monotonic()
        due = start + (frame.stamp_ns - first_stamp) * 1e-9 / rate
        wait = due - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        if stop.is_set():
            break
        now = time.monotonic()
        late = max(late, now - due)
        if on_offer is not None:
            on_offer(frame, now)
        rig.offer(frame.stamp_ns * 1e-9, frame.rgb, frame.depth_m, frame.tags if frame.tags_known else None, frame)
        count += 1
    return Played(count, start, time.monotonic(), late)
