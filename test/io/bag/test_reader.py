"""deal_ros.io.bag.reader: opening bags, and the one-line BagError for missing, empty, truncated ones."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bagfactory import K, write_empty_bag, write_rgbd_bag, write_ros1_rgbd_bag

from deal_ros.io.bag import BagError, ReadStats, inspect_bag, iter_rgbd_frames

CLASSES = ["mug", "box", "bottle"]


def test_missing_empty_and_unknown_paths(tmp_path):
    with pytest.raises(BagError, match="bag not found"):
        iter_rgbd_frames(tmp_path / "nothing")
    empty = write_empty_bag(tmp_path / "empty")
    with pytest.raises(BagError, match="contains no messages"):
        list(iter_rgbd_frames(empty, tags=["mug"]))
    with pytest.raises(BagError, match="contains no messages"):
        inspect_bag(empty)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BagError, match="not a bag"):
        inspect_bag(tmp_path / "x.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(BagError, match="not a rosbag2"):
        inspect_bag(tmp_path / "dir")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_bag(tmp_path, storage, keep):
    bag = write_rgbd_bag(tmp_path / "b", storage=storage, num_frames=10)
    (data_file,) = [p for p in bag.path.iterdir() if p.suffix in (".db3", ".mcap")]
    os.truncate(data_file, int(data_file.stat().st_size * keep))
    with pytest.raises(BagError, match="truncated or corrupt") as info:
        list(iter_rgbd_frames(bag.path))
    assert str(bag.path) in str(info.value)


def test_interrupted_recording_without_metadata_is_read(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", storage="mcap", num_frames=5)
    (bag.path / "metadata.yaml").unlink()
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, stats=stats))
    assert len(frames) == 5
    assert any("no metadata.yaml" in w for w in stats.warnings)


def test_ros1_bag(tmp_path):
    bag = write_ros1_rgbd_bag(tmp_path / "old.bag")
    info = inspect_bag(bag.path)
    assert info.storage == "rosbag1" and info.usable
    frames = list(iter_rgbd_frames(bag.path, classes=CLASSES))
    assert [f.stamp_ns for f in frames] == bag.rgb_stamps_ns
    np.testing.assert_array_equal(frames[3].rgb, bag.rgb[3])
    np.testing.assert_allclose(frames[3].depth_m, bag.depth_m[3], atol=1e-6)
    np.testing.assert_array_equal(frames[0].intrinsics, K)  # ROS 1 CameraInfo spells it K
    assert frames[0].tags == ["mug"]
