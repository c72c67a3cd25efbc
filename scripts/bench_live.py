#!/usr/bin/env python3
"""Segmentation while training in one process, without rclpy (`python scripts/bench_live.py`).

The onboard process's parts, wired as the nodes wire them: a camera thread at --camera-hz does what
the synchronised-pair callbacks do (the trainer's keyframe intake, the segmenter's latest-frame
slot); the segmenter thread runs its own copy of the network with the trainer's weight snapshots
and step control; the training loop trains. Two phases in the same run, the same frames:

  paused   - training paused: the segmenter alone (the baseline);
  training - training on.

Printed per phase: masks/s, input-to-mask latency (capture -> mask, median / p90), the segmenter's
inference time, training steps/s; then the ratios the issue's targets are stated in: masks/s
training / paused (target >= 0.5) and latency / inference time while training (target <= 2), and
the share of the pairs the keyframe gate took that reached the buffer (target >= 0.9).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import numpy as np
import torch

from deal_ros.compute.live import WeightHandoff
from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError, one_line
from deal_ros.inference.segmenter import Segmenter
from deal_ros.lab.synthetic import make_tabletop_scenes
from deal_ros.online.keyframes import KeyframeGate
from deal_ros.online.slot import LatestSlot
from deal_ros.online.training_loop import KeyframeIntake, TrainingLoop
from deal_ros.training.trainer import OnlineTrainer

LOG = logging.getLogger("bench_live")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0 (no mask in a short phase on a slow machine)."""
    return a / b if b else float("nan")


def size_hw(text: str) -> tuple[int, int]:
    """'240x320' -> (240, 320), for argparse."""
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 240x320, got {text!r}")
    return int(height), int(width)


class Rig:
    """Trainer, segmenter, training loop and a camera, as in the onboard process."""

    def __init__(self, cfg: DealRosConfig, frames: list, camera_hz: float, priority: float) -> None:
        self.trainer = OnlineTrainer(cfg)
        self.trainer.control.yield_share = priority if self.trainer.device.type == "cpu" else 0.0
        handoff = WeightHandoff()
        self.loop = TrainingLoop(self.trainer, LOG, ready=lambda: True, save=lambda why: (True, why),
                                 handoff=handoff)
        self.loop.publish_weights()
        self.segmenter = Segmenter(cfg, device=self.trainer.device, weights=handoff, control=self.trainer.control)
        self.intake = KeyframeIntake(self.trainer, KeyframeGate())
        self.frames = frames
        self.period_s = 1.0 / camera_hz
        self.slot: LatestSlot[tuple[float, np.ndarray, np.ndarray]] = LatestSlot()
        self.latencies: list[float] = []
        self.inference: list[float] = []
        self.masks = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._camera, daemon=True),
                         threading.Thread(target=self._segment, daemon=True)]

    def _camera(self) -> None:
        index = 0
        next_time = time.monotonic()
        while not self._stop.is_set():
            frame = self.frames[index % len(self.frames)]
            captured = time.monotonic()
            self.intake.offer(captured, lambda f=frame: f.rgb, lambda f=frame: f.depth_m, frame.tags)
            self.slot.put((captured, frame.rgb, frame.depth_m))
            index += 1
            next_time += self.period_s
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _segment(self) -> None:
        while not self._stop.is_set():
            taken = self.slot.take(timeout=0.2)
            if taken is None:
                continue
            captured, rgb, depth = taken.item
            started = time.monotonic()
            self.segmenter(rgb, depth)
            done = time.monotonic()
            self.latencies.append(done - captured)
            self.inference.append(done - started)
            self.masks += 1

    def start(self) -> None:
        self.loop.start()
        for thread in self._threads:
            thread.start()

    def measure(self, seconds: float) -> dict[str, float]:
        self.latencies, self.inference, self.masks = [], [], 0
        steps, started = self.trainer.step, time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        return {"masks_per_s": self.masks / elapsed, "latency_median_s": percentile(self.latencies, 50),
                "latency_p90_s": percentile(self.latencies, 90),
                "inference_median_s": percentile(self.inference, 50),
                "steps_per_s": (self.trainer.step - steps) / elapsed}

    def stop(self) -> float:
        self._stop.set()
        started = time.monotonic()
        self.loop.stop(timeout_s=5.0)
        for thread in self._threads:
            thread.join(timeout=5.0)
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time of each phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each phase is measured")
    parser.add_argument("--camera-hz", type=float, default=10.0)
    parser.add_argument("--camera", type=size_hw, default="240x320", help="camera HxW")
    parser.add_argument("--network", type=size_hw, default="240x320", help="network input HxW")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--priority", type=float, default=0.5, help="inference_priority (CPU only)")
    parser.add_argument("--weights", default="builtin", help="model.pretrained_path")
    args = parser.parse_args()
    if args.seconds <= 0 or args.warmup < 0 or args.camera_hz <= 0:
        parser.error("--seconds and --camera-hz must be > 0, --warmup >= 0")
    cam_h, cam_w = args.camera
    net_h, net_w = args.network
    classes = ["mug", "box", "ball"]
    cfg = DealRosConfig(classes=classes).updated({
        "model.input_height": net_h, "model.input_width": net_w, "model.pretrained_path": args.weights,
        "train.batch_size": args.batch_size, "train.device": args.device, "checkpoint.period_steps": 0})
    frames = make_tabletop_scenes(20, cam_h, cam_w, classes=classes, seed=0)
    rig = Rig(cfg, frames, args.camera_hz, args.priority)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them)")
    print(f"device {rig.trainer.device}, torch threads {torch.get_num_threads()}, camera {cam_w}x{cam_h} at "
          f"{args.camera_hz} Hz, network {net_w}x{net_h}, batch {args.batch_size}, inference_priority "
          f"{rig.trainer.control.yield_share}")
    rig.loop.set_paused(True)
    rig.start()
    time.sleep(args.warmup)
    paused = rig.measure(args.seconds)
    rig.loop.set_paused(False)
    time.sleep(args.warmup)
    training = rig.measure(args.seconds)
    offered = rig.intake.gate.accepted
    stop_s = rig.stop()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    for name, result in (("paused", paused), ("training", training)):
        print(f"{name:9s} masks/s {result['masks_per_s']:6.2f}  latency median {result['latency_median_s']:.3f} s "
              f"p90 {result['latency_p90_s']:.3f} s  inference median {result['inference_median_s']:.3f} s  "
              f"steps/s {result['steps_per_s']:.3f}")
    print(f"masks/s training / paused: {ratio(training['masks_per_s'], paused['masks_per_s']):.2f} (target >= 0.5)")
    print(f"latency / inference while training: "
          f"{ratio(training['latency_median_s'], training['inference_median_s']):.2f} (target <= 2); vs inference "
          f"paused: {ratio(training['latency_median_s'], paused['inference_median_s']):.2f}")
    print(f"keyframes: gate took {offered}, reached the buffer {rig.intake.buffered} "
          f"({rig.intake.buffered / max(offered, 1):.0%}; {rig.intake.degenerate} left out for depth); "
          f"training waited {rig.trainer.control.yield_s:.1f} s for inference; stop took {stop_s:.2f} s")


if __name__ == "__main__":
    try:
        main()
    except DealRosError as exc:  # a bad option (device, weights): one line, as the CLI prints it
        sys.exit(f"bench_live: {one_line(exc)}")
