"""Tags from parameter / topic, keyframe gating (rclpy-free, CI)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deal_ros.io.tags import UnknownTagError
from deal_ros.ros.keyframes import KeyframeGate, thumbnail
from deal_ros.ros.tagging import TagState, tags_from_parameter, tags_parameter_value

CLASSES = ["mug", "box", "ball"]


@pytest.mark.parametrize("value, expected", [
    ("mug, box", ["mug", "box"]),
    (["mug", "box"], ["mug", "box"]),
    (["mug, box"], ["mug", "box"]),
    ("[mug, 'box']", ["mug", "box"]),
    ("", []),
    (b"", []),
    ([], []),
    ("box,box", ["box"]),
])
def test_tags_from_parameter(value, expected):
    assert tags_from_parameter(value, CLASSES) == expected


def test_unknown_tag_is_refused_with_a_hint():
    with pytest.raises(UnknownTagError, match="did you mean 'mug'"):
        tags_from_parameter("mugg", CLASSES)
    with pytest.raises(ValueError):
        tags_from_parameter(3, CLASSES)


def test_tag_state_keeps_previous_tags_on_error():
    state = TagState(CLASSES)
    assert not state.known and state.tags == ()
    update = state.set("mug,box", "topic")
    assert update.changed and not update.error and state.known
    bad = state.set("mug,plate", "topic '/deal/tags'")
    assert bad.error and "plate" in bad.error and "keeping the previous tags ['mug', 'box']" in bad.error
    assert state.tags == ("mug", "box") and state.refused == 1
    assert not state.set("mug, box").changed
    assert state.set("").tags == () and state.known  # '' said explicitly: nothing in view


def test_tag_state_initial_value():
    assert TagState(CLASSES, "ball").tags == ("ball",)
    assert TagState(CLASSES, "ball").known
    with pytest.raises(ValueError, match="unknown"):
        TagState(CLASSES, "plate")


def test_tag_state_thread_safe():
    state = TagState(CLASSES)
    values = ["mug", "box", "ball", "mug,box"]

    def writer(i):
        for j in range(200):
            state.set(values[(i + j) % len(values)])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.tags in {tuple(tags_from_parameter(v, CLASSES)) for v in values}


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


def test_tag_listeners_hear_changes_from_elsewhere():
    state = TagState(CLASSES)
    heard: dict[str, list] = {"trainer": [], "segmenter": []}
    trainer, segmenter = object(), object()
    state.add_listener(trainer, lambda update: heard["trainer"].append(update.tags))
    state.add_listener(segmenter, lambda update: heard["segmenter"].append(update.tags))
    state.set("mug, box", "topic '/deal/tags'")  # the topic: both nodes mirror it into their parameter
    assert heard == {"trainer": [("mug", "box")], "segmenter": [("mug", "box")]}
    state.set(["ball"], "parameter 'tags'", origin=trainer)  # the trainer's own parameter: only the other hears
    assert heard["trainer"] == [("mug", "box")] and heard["segmenter"][-1] == ("ball",)
    state.set("ball")  # no change: nobody is told (no parameter ping-pong)
    state.set("plate")  # refused: nobody is told
    assert len(heard["segmenter"]) == 2


def test_tags_parameter_value():
    assert tags_parameter_value(("mug", "box")) == ["mug", "box"]
    assert tags_parameter_value(()) == ""  # rclpy would type [] as a byte array


def test_gate_decodes_only_when_the_interval_allows():
    gate = KeyframeGate(min_interval_s=0.5)
    calls = []

    def decode():
        calls.append(1)
        return np.zeros((24, 32, 3), np.uint8)

    assert gate.decide(0.0, decode, ["mug"]).accept and len(calls) == 1
    assert gate.decide(0.1, decode, ["mug"]).reason == "too soon" and len(calls) == 1
