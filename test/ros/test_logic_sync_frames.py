"""Sync staleness messages and RGB-D pair validation (rclpy-free, CI)."""

from __future__ import annotations

from types import SimpleNamespace as Ns

from deal_ros.ros.frames import PairValidator, check_pair
from deal_ros.ros.sync_health import SyncWatchdog

INPUTS = [("rgb", "/cam/rgb"), ("depth", "/cam/depth")]


def test_healthy_stream_gives_no_warning():
    dog = SyncWatchdog(INPUTS, timeout_s=2.0)
    dog.start(0.0)
    for t in range(10):
        dog.note_input("rgb", t, t)
        dog.note_input("depth", t, t)
        dog.note_pair(t)
        assert dog.check(t + 0.5) is None


def test_qos_mismatch_named():
    dog = SyncWatchdog(INPUTS, timeout_s=2.0, qos_text="reliable, depth 5")
    dog.start(0.0)
    dog.note_publishers("rgb", 1)
    dog.note_publishers("depth", 1)
    for t in range(5):
        dog.note_input("rgb", t, t)
    msg = dog.check(5.0)
    assert msg is not None
    assert "no synchronised RGB-D pair for 5.0 s" in msg
    assert "depth '/cam/depth': last message never" in msg
    assert "rgb '/cam/rgb': last message 1.0 s ago" in msg
    assert "QoS mismatch" in msg and "reliable" in msg
    best_effort = SyncWatchdog(INPUTS, timeout_s=2.0)
    best_effort.start(0.0)
    best_effort.note_publishers("depth", 1)
    best_effort.note_input("rgb", 4.9, 4.9)
    assert "publisher is silent" in best_effort.check(5.0)
    assert dog.check(6.0) is None  # rate limited
    assert dog.check(7.5) is not None


def test_missing_publisher_named():
    dog = SyncWatchdog(INPUTS, timeout_s=1.0)
    dog.start(0.0)
    dog.note_publishers("rgb", 1)
    dog.note_publishers("depth", 0)
    dog.note_input("rgb", 1.5, 1.5)
    msg = dog.check(2.0)
    assert "no publisher on depth topic '/cam/depth'" in msg


def test_unaligned_stamps_named():
    dog = SyncWatchdog(INPUTS, timeout_s=1.0, slop_s=0.05)
    dog.start(0.0)
    for name in ("rgb", "depth"):
        dog.note_publishers(name, 1)
    for t in range(5):
        dog.note_input("rgb", t, 1000.0 + t)
        dog.note_input("depth", t, 1.0 + t)  # a different clock
    msg = dog.check(4.5)
    assert "stamps differ by 999.000 s > sync.slop 0.05 s" in msg and "unaligned stamps" in msg


def test_no_camera_at_all_is_not_a_sync_problem():
    dog = SyncWatchdog(INPUTS, timeout_s=1.0)
    dog.start(0.0)
    dog.note_publishers("rgb", 0)
    dog.note_publishers("depth", 0)
    assert dog.check(10.0) is None


def _img(encoding, width=64, height=48, frame="cam_color_optical"):
    return Ns(encoding=encoding, width=width, height=height, header=Ns(frame_id=frame))


def test_check_pair_good_and_units():
    check = check_pair(_img("rgb8"), _img("16UC1"))
    assert check.ok and not check.warnings and "16UC1 (millimetres)" in check.info
    assert "32FC1 (metres)" in check_pair(_img("bgr8"), _img("32FC1")).info


def test_check_pair_errors():
    assert "swapped" in check_pair(_img("16UC1"), _img("rgb8")).errors[0]
    sizes = check_pair(_img("rgb8", 640, 480), _img("16UC1", 480, 640))
    assert not sizes.ok and "width and height swapped" in sizes.errors[0] and "aligned to colour" in sizes.errors[0]
    assert "not a depth encoding" in check_pair(_img("rgb8"), _img("mono8")).errors[0]
    assert "not a colour encoding" in check_pair(_img("32FC1"), _img("32FC1")).errors[0]


def test_check_pair_warnings():
    frames = check_pair(_img("rgb8"), _img("16UC1", frame="depth_optical"))
    assert frames.ok and "frame_id" in frames.warnings[0]
    info = Ns(width=1280, height=960)
    assert "rescaled" in check_pair(_img("rgb8"), _img("16UC1"), info).warnings[0]
    assert not check_pair(_img("rgb8"), _img("16UC1"), Ns(width=64, height=48)).warnings


def test_validator_checks_only_on_layout_change():
    validator = PairValidator()
    assert validator.check(_img("rgb8"), _img("16UC1")).ok
    assert validator.check(_img("rgb8"), _img("16UC1")) is None
    bad = validator.check(_img("rgb8", 32), _img("16UC1"))
    assert not bad.ok and validator.rejected == 1
    assert validator.check(_img("rgb8"), _img("16UC1")) is None
