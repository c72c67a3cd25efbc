"""Why the synchroniser is silent, in words."""

from __future__ import annotations

from deal_ros.online.sync_health import SyncWatchdog

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


def test_a_topic_of_another_message_type_is_named():
    dog = SyncWatchdog(INPUTS, timeout_s=2.0)
    dog.start(0.0)
    dog.note_publishers("rgb", 0, ("sensor_msgs/msg/CompressedImage",))
    dog.note_publishers("depth", 1)
    assert dog.wrong_types() and "CompressedImage" in dog.wrong_types()[0] and "/cam/rgb" in dog.wrong_types()[0]
    warning = dog.check(3.0)
    assert warning is not None and "not sensor_msgs/msg/Image" in warning and "remap to the raw image topic" in warning
