"""The scripted close-up stream: tags change with the objects, ground truth matches the frames, the camera moves."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deal_ros.lab.synthetic.stream import BASE_STAMP_NS, CloseupStream, object_sets
from deal_ros.online.keyframes import KeyframeGate, thumbnail

CLASSES = ("mug", "box", "ball")


@pytest.fixture(scope="module")
def stream() -> CloseupStream:
    return CloseupStream(12.0, 10.0, 48, 64, CLASSES, seed=0, segment_s=(4.0, 5.0))


def test_object_sets_show_each_class_alone_then_pairs():
    sets = object_sets(CLASSES, np.random.default_rng(0))
    first = [next(sets) for _ in range(6)]
    assert sorted(first[:3]) == [("ball",), ("box",), ("mug",)]
    assert sorted(first[3:]) == [("box", "ball"), ("mug", "ball"), ("mug", "box")]


def test_tags_change_when_the_objects_change(stream):
    frames = list(stream.frames())
    assert len(frames) == 120 and len(stream.segments) >= 3
    assert sorted(s.tags for s in stream.segments[:3]) == [("ball",), ("box",), ("mug",)]
    assert all(a.tags != b.tags for a, b in itertools.pairwise(stream.segments))
    for frame in frames:
        segment = stream.segments[stream.segment_of(frame.index)]
        assert tuple(frame.tags) == segment.tags
        assert segment.start_s <= frame.index / 10.0 < segment.end_s


def test_ground_truth_matches_every_frame(stream):
    for frame in stream.frames():
        gt = stream.gt(frame.index)
        assert gt.shape == frame.rgb.shape[:2] == frame.depth_m.shape
        present = [CLASSES[c - 1] for c in np.unique(gt) if c > 0]
        assert present == frame.tags  # every tagged object is in view, and nothing else
        objects = gt > 0
        assert 0.03 < objects.mean() < 0.6
        # the objects stand out of the table: their depth is nearer than the background's median
        valid = frame.depth_m > 0
        assert np.median(frame.depth_m[objects & valid]) < np.median(frame.depth_m[~objects & valid])


def test_stamps_follow_the_camera_rate(stream):
    stamps = np.array([f.stamp_ns for f in stream.frames()])
    assert stamps[0] == BASE_STAMP_NS
    assert np.all(np.diff(stamps) == 100_000_000)


def test_the_camera_moves_smoothly_and_the_gate_sees_it(stream):
    frames = list(stream.frames())
    thumbs = [thumbnail(f.rgb) for f in frames]
    same_segment = [i for i in range(10, len(frames)) if stream.segment_of(i) == stream.segment_of(i - 10)]
    step = np.mean([np.abs(thumbs[i] - thumbs[i - 1]).mean() for i in same_segment])
    second = np.mean([np.abs(thumbs[i] - thumbs[i - 10]).mean() for i in same_segment])
    assert second > 2 * step  # a path, not a jump cut: further apart in time, further apart in view
    gate = KeyframeGate(min_interval_s=0.5, max_interval_s=0.0, motion_threshold=0.02)
    reasons = [gate.decide(f.stamp_ns * 1e-9, f.rgb, f.tags).reason for f in frames]
    assert reasons.count("view changed") >= 8


def test_a_faster_camera_holds_the_pose_between_renders():
    fast = CloseupStream(1.0, 30.0, 32, 48, CLASSES, seed=1)
    frames = list(fast.frames())
    assert len(frames) == 30
    assert np.array_equal(fast.gt(0), fast.gt(2))  # three frames a pose at 10 poses/s
    assert not np.array_equal(frames[0].rgb, frames[1].rgb)  # each with its own sensor noise draw
    assert np.array_equal(frames[0].rgb, CloseupStream(1.0, 30.0, 32, 48, CLASSES, seed=1).frames().__next__().rgb)
