"""Tags from a parameter or a topic: parsing, refusals, listeners, the parameter's value."""

from __future__ import annotations

import threading

import pytest

from deal_ros.frames.tags import parse_tags
from deal_ros.online.tags import TagState, tags_parameter_value

CLASSES = ["mug", "box", "ball"]


def test_tag_state_reads_tags_as_the_offline_tools_do():
    state = TagState(CLASSES)
    assert state.set(["mug, box"], "parameter 'tags'").tags == ("mug", "box")
    assert state.set("[ball, 'mug']", "topic '/deal/tags'").tags == ("ball", "mug")
    assert "'mugg' -> did you mean 'mug'" in state.set("mugg").error
    assert "got 3" in state.set(3).error and state.tags == ("ball", "mug")


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
    assert state.tags in {tuple(parse_tags(v, CLASSES)) for v in values}




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
