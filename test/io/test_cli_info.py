"""`deal-ros info`: output and exit codes on real bags."""

from __future__ import annotations

import json

import pytest
from bagfactory import write_rgbd_bag

from deal_ros.cli import main


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory):
    return write_rgbd_bag(tmp_path_factory.mktemp("info") / "good", storage="mcap", num_frames=6).path


def test_info_text(good_bag, capsys):
    assert main(["info", str(good_bag)]) == 0
    out = capsys.readouterr().out
    assert "storage:  mcap" in out
    assert "/camera/color/image_raw" in out and "sensor_msgs/msg/Image" in out
    assert "rgb8 160x120" in out and "16UC1 160x120" in out
    assert "verdict: USABLE" in out
    assert "depth:       /camera/aligned_depth_to_color/image_raw" in out
    assert "tags:        /tags" in out and "RealSense" in out


def test_info_json(good_bag, capsys):
    assert main(["info", str(good_bag), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["usable"] is True and info["storage"] == "mcap"
    counts = {t["name"]: t["count"] for t in info["topics"]}
    assert counts["/camera/color/image_raw"] == 6 and counts["/camera/color/camera_info"] == 6
    assert info["choice"]["rgb_topic"] == "/camera/color/image_raw"


def test_info_unusable_bag_exits_1(good_bag, tmp_path, capsys):
    bad = write_rgbd_bag(tmp_path / "bad", num_frames=3, depth_topic="/camera/ir/image_raw").path
    assert main(["info", str(good_bag), str(bad)]) == 1
    out = capsys.readouterr().out
    assert sum(line.startswith("bag:") for line in out.splitlines()) == 2
    assert "NOT USABLE" in out and "no depth topic found" in out and "/camera/ir/image_raw" in out


def test_info_missing_bag_exits_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "deal-ros info: error: bag not found" in err and "Traceback" not in err


def test_info_corrupt_bag_exits_2(tmp_path, capsys):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=3).path
    (bag / "b.db3").write_bytes(b"garbage" * 100)
    assert main(["info", str(bag)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_info_names_float_depth_in_millimetres(tmp_path, capsys):
    """32FC1 depth holding millimetres is not USABLE: train would refuse it (or read it with depth.float_unit=mm)."""
    metres = write_rgbd_bag(tmp_path / "m", num_frames=3)
    frames = [(rgb, depth * 1000) for rgb, depth in zip(metres.rgb, metres.depth_m, strict=True)]
    bag = write_rgbd_bag(tmp_path / "mm", num_frames=3, frames=frames, depth_encoding="32FC1").path
    assert main(["info", str(bag)]) == 1
    out = capsys.readouterr().out
    assert "cannot be metres (likely millimetres" in out and "depth.float_unit=mm" in out
    assert "verdict: USABLE" not in out
