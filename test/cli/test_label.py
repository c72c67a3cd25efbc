"""`deal-ros label`: PNGs and a labelled bag that reads back with rosbags, from a trained checkpoint."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from bagfactory import write_ros1_rgbd_bag
from clitools import NUM_FRAMES, SIZE, TINY, assert_user_error, run_cli
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from deal_ros.cli import main
from deal_ros.io.image_codec import decode_image

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

LABEL_ENCODINGS = {"/deal/mask": "mono8", "/deal/pseudo_label": "mono8", "/deal/confidence": "32FC1",
                   "/deal/overlay": "rgb8"}


def test_pngs(labelled):
    out = labelled.out
    names = [f"{i:06d}.png" for i in range(NUM_FRAMES)]
    assert sorted(p.name for p in (out / "mask").iterdir()) == names
    assert sorted(p.name for p in (out / "overlay").iterdir()) == names
    assert sorted(p.name for p in (out / "pseudo_label").iterdir()) == names[: labelled.tagged_frames]
    assert 0 < labelled.tagged_frames < NUM_FRAMES
    mask = cv2.imread(str(out / "mask" / names[0]), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == SIZE and mask.max() <= 2
    pseudo = cv2.imread(str(out / "pseudo_label" / names[0]), cv2.IMREAD_UNCHANGED)
    assert pseudo.shape == SIZE and set(np.unique(pseudo)) <= {0, 1, 2, 255}
    assert cv2.imread(str(out / "overlay" / names[0])).shape == (*SIZE, 3)
    frames = json.loads((out / "frames.json").read_text())
    assert [f["tags"] is not None for f in frames] == [i < labelled.tagged_frames for i in range(NUM_FRAMES)]
    assert f"labelled {NUM_FRAMES} frame(s)" in labelled.result.stdout
    assert "warning: classes mug, box were tagged in exactly the same frames" in labelled.result.stdout, \
        "the checkpoint's tags never told mug from box"


def test_labelled_bag_reads_back(labelled, scene_bag):
    written = scene_bag.bag
    with AnyReader([labelled.out / "labelled_bag"], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        counts = {name: info.msgcount for name, info in reader.topics.items()}
        assert all(c.msgdef.data for c in reader.connections)  # definitions stored: plays back
        messages = {}
        for conn, log_ns, raw in reader.messages():
            if conn.topic.startswith("/deal/"):
                messages.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
    with AnyReader([written.path]) as source:
        original = {name: info.msgcount for name, info in source.topics.items()}
    assert {k: counts[k] for k in original} == original  # every original message copied
    assert original["/camera/color/image_raw"] == NUM_FRAMES and original["/tags"] == 1
    expected = {"/deal/mask": NUM_FRAMES, "/deal/confidence": NUM_FRAMES, "/deal/overlay": NUM_FRAMES,
                "/deal/pseudo_label": labelled.tagged_frames}
    assert {k: counts[k] for k in expected} == expected
    for topic, items in messages.items():
        for index, (log_ns, msg) in enumerate(items):
            assert msg.encoding == LABEL_ENCODINGS[topic]
            assert (msg.height, msg.width) == SIZE
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == written.rgb_stamps_ns[index]
            assert msg.header.frame_id == "camera_color_optical_frame"
            assert log_ns == written.rgb_log_ns[index]  # recorded beside the colour image
    for index, (_, msg) in enumerate(messages["/deal/mask"]):
        png = cv2.imread(str(labelled.out / "mask" / f"{index:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decode_image(msg), png)
    confidence = decode_image(messages["/deal/confidence"][0][1])
    assert confidence.dtype == np.float32 and 0 < confidence.min() <= confidence.max() <= 1


def test_label_no_bag_and_errors(trained, labelled, scene_bag, tmp_path, capsys):
    bag, ckpt = str(scene_bag.bag.path), str(trained.checkpoint)
    rc = main(["label", ckpt, bag, "--out", str(tmp_path / "a"), "--tags", "mug,cup", "--device", "cpu"])
    assert_user_error(rc, capsys.readouterr().err, "unknown tag(s) 'cup'")
    rc = main(["label", str(tmp_path / "none.safetensors"), bag, "--out", str(tmp_path / "b")])
    assert_user_error(rc, capsys.readouterr().err, "checkpoint not found")
    ros1 = write_ros1_rgbd_bag(tmp_path / "ros1.bag", num_frames=2, size=SIZE)
    rc = main(["label", ckpt, str(ros1.path), "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert_user_error(rc, capsys.readouterr().err, "ROS 1 bag", "--no-bag")
    rc = main(["label", ckpt, str(ros1.path), "--out", str(tmp_path / "c"), "--device", "cpu", "--no-bag"])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "c" / "mask").iterdir())) == 2 and not (tmp_path / "c" / "labelled_bag").exists()
    assert len(list((tmp_path / "c" / "pseudo_label").iterdir())) == 2  # tags from the bag's /tags topic


def test_a_second_label_replaces_the_result_as_a_whole(trained, labelled, scene_bag, tmp_path, capsys):
    """README: `label` replaces a previous result in its --out; with --no-bag the old labelled bag goes too."""
    out = tmp_path / "labels"
    shutil.copytree(labelled.out, out)  # a finished result, labelled bag included
    other = tmp_path / "other" / "model.safetensors"  # another checkpoint
    other.parent.mkdir()
    shutil.copy(trained.checkpoint, other)
    stale = out / "labelled_bag" / "metadata.yaml"
    stale.write_text(stale.read_text() + "# the previous run's\n")
    rc = main(["label", str(other), str(scene_bag.bag.path), "--out", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "classes.json").read_text())["checkpoint"] == str(other)
    assert "# the previous run's" not in stale.read_text()  # a new labelled bag
    rc = main(["label", str(trained.checkpoint), str(scene_bag.bag.path), "--out", str(out), "--device", "cpu",
               "--no-bag"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "classes.json").read_text())["checkpoint"] == str(trained.checkpoint)
    assert not (out / "labelled_bag").exists()  # not left beside masks of another checkpoint
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "frames.json", "mask", "overlay",
                                                     "pseudo_label"]


def test_info_of_labelled_bag_through_the_installed_command(labelled):
    result = run_cli("info", str(labelled.out / "labelled_bag"))
    assert result.returncode == 0, result.stderr
    assert "/deal/mask" in result.stdout and "mono8 64x48" in result.stdout and "32FC1 64x48" in result.stdout


def test_part_contrast_reads_the_bag_twice(realsense_bag, scene_bag, tmp_path, capsys):
    """pseudo_label.part_contrast: the tagged frames' depth parts go into the bank before the first is labelled."""
    model = tmp_path / "model"
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "1", "--out", str(model), *TINY,
               "--set", "pseudo_label.part_contrast=true"])
    assert rc == 0, capsys.readouterr().err
    schedule = tmp_path / "ranges.yaml"
    schedule.write_text("- {start_s: 0.0, end_s: 0.25, tags: 'mug'}\n- {start_s: 0.25, end_s: 9.0, tags: 'mug, box'}\n")
    out = tmp_path / "labels"
    rc = main(["label", str(model / "model.safetensors"), str(scene_bag.bag.path), "--out", str(out),
               "--tags-yaml", str(schedule), "--device", "cpu", "--no-bag"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    line = next(line for line in captured.out.splitlines() if line.startswith("part contrast:"))
    assert "of 2 tag patterns in the bank" in line, line
    held = int(line.split("of ")[1].split(" ")[0])
    assert 2 <= held <= NUM_FRAMES, line
    assert len(list((out / "pseudo_label").iterdir())) == NUM_FRAMES
