"""Keyframe gating: time, motion, sensor noise, decoding only when allowed; the same gate over bag frames."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from deal_ros.config import KeyframeConfig
from deal_ros.io.bag import iter_rgbd_frames
from deal_ros.online.keyframes import KeyframeGate, thumbnail

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))

from bagfactory import write_rgbd_bag

CLASSES = ["mug", "box", "ball"]


def _frame(value: int, shape=(48, 64)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def test_thumbnail_shape_and_range():
    thumb = thumbnail(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    assert thumb.shape == (24, 32) and thumb.dtype == np.float32 and 0 <= thumb.min() <= thumb.max() <= 1


def test_keyframe_gate_time_and_motion():
    gate = KeyframeGate(min_interval_s=0.5, max_interval_s=5.0, motion_threshold=0.05)
    assert gate.decide(10.0, _frame(100), ["mug"]).reason == "first frame"
    assert gate.decide(10.1, _frame(200), ["mug"]).reason == "too soon"
    assert gate.decide(11.0, _frame(101), ["mug"]).reason == "no motion"
    moved = gate.decide(11.0, _frame(160), ["mug"])
    assert moved.accept and moved.reason == "view changed" and moved.motion > 0.05
    assert gate.decide(11.6, _frame(160), ["box"]).reason == "tags changed"
    assert gate.decide(16.7, _frame(160), ["box"]).reason == "max interval"
    assert gate.decide(3.0, _frame(160), ["box"]).reason.startswith("time went backwards")
    assert gate.accepted == 5 and gate.rejected == 2


def test_keyframe_gate_ignores_sensor_noise():
    rng = np.random.default_rng(1)
    blocks = rng.integers(20, 230, (6, 8, 3)).astype(np.uint8)  # a structured scene, 80-pixel blocks
    base = np.kron(blocks, np.ones((80, 80, 1), np.uint8)).astype(np.int16)
    gate = KeyframeGate(min_interval_s=0.0, max_interval_s=0.0, motion_threshold=0.02)
    gate.decide(0.0, base.astype(np.uint8), [])
    for t in range(1, 5):
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        assert not gate.decide(float(t), noisy, []).accept
    shifted = np.roll(base, 80, axis=1).astype(np.uint8)
    assert gate.decide(9.0, shifted, []).accept


def test_gate_decodes_only_when_the_interval_allows():
    gate = KeyframeGate(min_interval_s=0.5)
    calls = []

    def decode():
        calls.append(1)
        return np.zeros((24, 32, 3), np.uint8)

    assert gate.decide(0.0, decode, ["mug"]).accept and len(calls) == 1
    assert gate.decide(0.1, decode, ["mug"]).reason == "too soon" and len(calls) == 1


def test_bag_frames_through_the_gate(tmp_path):
    """`deal-ros train --set keyframe.min_interval_s=0.25`: the node's gate over a bag's 20 frames at 10 Hz."""
    bag = write_rgbd_bag(tmp_path / "bag", num_frames=20, jitter_ms=8)
    skipped: Counter[str] = Counter()
    gate = KeyframeGate.from_config(KeyframeConfig(min_interval_s=0.25, max_interval_s=0.0, motion_threshold=0.0))
    frames = []
    for frame in iter_rgbd_frames(bag.path):
        decision = gate.decide(frame.stamp_ns * 1e-9, frame.rgb, frame.tags)
        if decision.accept:
            frames.append(frame)
        else:
            skipped.update([decision.reason])
    gaps = np.diff([f.stamp_ns for f in frames])
    assert len(frames) == 7 and np.all(gaps >= 0.25e9)
    assert skipped == {"too soon": 13} and gate.rejected == 13
    gate = KeyframeGate(0.5, 0.0, 0.0)
    two_bags = [f for f in iter_rgbd_frames([bag.path, bag.path])
                if gate.decide(f.stamp_ns * 1e-9, f.rgb, f.tags).accept]
    assert len(two_bags) == 8  # the second bag starts over in time: its first frame is taken


def test_the_gate_takes_the_config_keyframe_section():
    gate = KeyframeGate.from_config(KeyframeConfig())
    assert (gate.min_interval_s, gate.max_interval_s, gate.motion_threshold) == (0.5, 5.0, 0.04)  # the node's
    assert gate.decide(0.0, np.zeros((24, 32, 3), np.uint8), ["mug"]).accept
    gate.configure(KeyframeConfig(min_interval_s=2.0))  # `ros2 param set`: what the gate saw is kept
    assert gate.min_interval_s == 2.0
    assert gate.decide(1.0, np.zeros((24, 32, 3), np.uint8), ["mug"]).reason == "too soon"
