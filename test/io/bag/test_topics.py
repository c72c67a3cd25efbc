"""deal_ros.io.bag.topics: driver profiles and name heuristics pick the RGB, depth, camera_info and tags topics."""

from __future__ import annotations

import pytest
from bagfactory import write_rgbd_bag

from deal_ros.io.bag import BagError, inspect_bag, iter_rgbd_frames


def test_missing_topic_lists_image_topics(bag):
    with pytest.raises(
        BagError, match=r"/nope.*/camera/aligned_depth_to_color/image_raw.*/camera/color/image_raw"
    ):
        list(iter_rgbd_frames(bag.path, rgb_topic="/nope"))
    with pytest.raises(BagError, match="has type std_msgs/msg/String"):
        list(iter_rgbd_frames(bag.path, depth_topic="/tags"))


def test_realsense_camera_camera_names_are_picked(tmp_path):
    bag = write_rgbd_bag(
        tmp_path / "b",
        num_frames=4,
        rgb_topic="/camera/camera/color/image_raw",
        depth_topic="/camera/camera/aligned_depth_to_color/image_raw",
        info_topic="/camera/camera/color/camera_info",
    )
    frames = list(iter_rgbd_frames(bag.path))
    assert len(frames) == 4 and frames[0].intrinsics is not None
    info = inspect_bag(bag.path)
    assert info.usable and info.choice.depth_aligned
    assert info.choice.rgb_topic == "/camera/camera/color/image_raw"


def test_select_topics_heuristics_and_explicit_unaligned_depth():
    from deal_ros.io.bag import select_topics

    image, compressed = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
    topics = {
        "/robot/head_cam/rgb/image": image,
        "/robot/head_cam/rgb/image/compressed": compressed,
        "/robot/head_cam/depth_registered/image": image,
        "/robot/head_cam/depth_registered/image/compressedDepth": compressed,
        "/robot/head_cam/rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    }
    choice = select_topics(topics)
    assert choice.rgb_topic == "/robot/head_cam/rgb/image"
    assert choice.depth_topic == "/robot/head_cam/depth_registered/image" and choice.depth_aligned
    assert choice.info_topic == "/robot/head_cam/rgb/camera_info" and choice.tags_topic is None
    rs = {"/camera/color/image_raw": image, "/camera/depth/image_rect_raw": image}
    choice = select_topics(rs, depth_topic="/camera/depth/image_rect_raw")
    assert choice.depth_aligned is False and any("unaligned" in w for w in choice.warnings)
    with pytest.raises(BagError, match="no depth topic found"):
        select_topics({"/camera/color/image_raw": image})
