"""deal_ros.io.bag.inspection: what inspect_bag reports about a bag."""

from __future__ import annotations

import pytest
from bagfactory import write_rgbd_bag

from deal_ros.io.bag import inspect_bag


def test_inspect_bag(bag):
    info = inspect_bag(bag.path)
    assert info.usable and not info.problems
    assert info.storage == ("mcap" if "mcap" in str(bag.path) else "sqlite3")
    rgb = info.topic("/camera/color/image_raw")
    assert (rgb.count, rgb.encoding, rgb.width, rgb.height) == (20, "rgb8", 160, 120)
    assert rgb.rate_hz == pytest.approx(10.0, rel=0.1)
    assert info.topic("/camera/aligned_depth_to_color/image_raw").encoding == "16UC1"
    assert info.choice.info_topic == "/camera/color/camera_info" and info.choice.tags_topic == "/tags"
    assert 1.8 < info.duration_s < 2.1


@pytest.mark.parametrize("tags_sequence, problem", [
    (((30.0, "mug"),), "no usable RGB-D frame: no_tags 3"),  # the only tags come after every frame
    (((0.0, ""),), "tags topic /tags names no class at any of the 3 frame(s)"),
])
def test_a_tags_topic_that_tags_no_frame_is_not_usable(tmp_path, tags_sequence, problem):
    written = write_rgbd_bag(tmp_path / "bag", num_frames=3, size=(48, 64), tags_sequence=tags_sequence)
    info = inspect_bag(written.path)
    assert not info.usable
    assert any(problem in p for p in info.problems), info.problems
