#!/usr/bin/env python3
"""Segmentation while training in one process, without rclpy (`python scripts/bench_live.py`).

The onboard process's parts, wired as the nodes wire them (deal_ros.online.live_rig.LiveRig, as `deal-ros
bench live` uses them): a camera thread at --camera-hz offers each frame as the synchronised-pair callbacks
take it (the trainer's keyframe intake, the segmenter's latest-frame slot); the segmenter thread runs its own
copy of the network with the trainer's weight snapshots and step control; the training loop trains. Two
phases in the same run, the same frames:

  paused   - training paused: the segmenter alone (the baseline);
  training - training on.

Printed per phase: masks/s, input-to-mask latency (capture -> mask, median / p90), the segmenter's
inference time, training steps/s; then the ratios the issue's targets are stated in: masks/s
training / paused (target >= 0.5) and latency / inference time while training (target <= 2), and
the share of the pairs the keyframe gate took that reached the buffer (target >= 0.9).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import torch

from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError, one_line
from deal_ros.io.bag import RGBDFrame
from deal_ros.lab.synthetic import SyntheticFrame, make_tabletop_scenes
from deal_ros.online.live_rig import LiveMask, LiveRig, play

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


def camera(scenes: list[SyntheticFrame], camera_hz: float) -> Iterator[RGBDFrame]:
    """The scenes over and over, stamped as a camera at camera_hz would stamp them."""
    for index in itertools.count():
        scene = scenes[index % len(scenes)]
        yield RGBDFrame(round(index * 1e9 / camera_hz), scene.rgb, scene.depth_m, scene.tags, "", None, index)


class Phases:
    """The rig's masks and steps, counted per measuring phase."""

    def __init__(self, rig: LiveRig) -> None:
        self.rig = rig
        self.latencies: list[float] = []
        self.inference: list[float] = []

    def on_mask(self, mask: LiveMask) -> None:
        self.latencies.append(mask.done_s - mask.offered_s)
        self.inference.append(mask.inference_s)

    def measure(self, seconds: float) -> dict[str, float]:
        self.latencies, self.inference = [], []
        steps, started = self.rig.trainer.step, time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        latencies, inference = list(self.latencies), list(self.inference)
        return {"masks_per_s": len(latencies) / elapsed, "latency_median_s": percentile(latencies, 50),
                "latency_p90_s": percentile(latencies, 90), "inference_median_s": percentile(inference, 50),
                "steps_per_s": (self.rig.trainer.step - steps) / elapsed}


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
        "train.batch_size": args.batch_size, "train.device": args.device})
    scenes = make_tabletop_scenes(20, cam_h, cam_w, classes=classes, seed=0)
    rig = LiveRig(cfg, {"inference_priority": args.priority}, LOG)
    phases = Phases(rig)
    rig.on_mask = phases.on_mask
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them)")
    print(f"device {rig.trainer.device}, torch threads {torch.get_num_threads()}, camera {cam_w}x{cam_h} at "
          f"{args.camera_hz} Hz, network {net_w}x{net_h}, batch {args.batch_size}, inference_priority "
          f"{rig.trainer.control.yield_share}")
    stop = threading.Event()
    player = threading.Thread(target=play, args=(rig, camera(scenes, args.camera_hz)), kwargs={"stop": stop},
                              daemon=True)
    rig.loop.set_paused(True)
    rig.start()
    player.start()
    time.sleep(args.warmup)
    paused = phases.measure(args.seconds)
    rig.loop.set_paused(False)
    time.sleep(args.warmup)
    training = phases.measure(args.seconds)
    offered = rig.gate.accepted
    started = time.monotonic()
    stop.set()
    player.join(timeout=5.0)
    rig.stop()
    stop_s = time.monotonic() - started
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
