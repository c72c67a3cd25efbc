"""deal_ros.io.bag.inspection: what inspect_bag reports about a bag."""

from __future__ import annotations

import pytest

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
