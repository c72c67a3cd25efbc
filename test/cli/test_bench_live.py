"""`deal-ros bench live`: a short stream through the onboard wiring, scored over time; bad inputs in one line."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from clitools import TINY, assert_user_error

from deal_ros.cli import main

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

PUBLISH = ["--set", "mask.min_model_step=0"]
"""Masks from the first weights on: a run of seconds trains a handful of steps."""


def check_report(data: dict, window_s: float) -> None:
    assert data["masks"] > 0 and data["masks_computed"] >= data["masks"] and data["masks_per_s"] > 0
    windows = data["windows"]
    assert windows[0]["start_s"] == 0.0 and windows[-1]["end_s"] == pytest.approx(data["duration_s"])
    for before, after in itertools.pairwise(windows):
        assert after["start_s"] == before["end_s"] == pytest.approx(before["start_s"] + window_s)
    assert sum(w["masks"] for w in windows) == data["masks"]
    assert sum(w["steps"] for w in windows) == data["steps"]
    for w in windows:
        for key in ("miou", "miou_all"):
            assert w[key] is None or 0.0 <= w[key] <= 1.0
    assert any(w["miou"] is not None for w in windows)
    for levels in (data["seconds_to_miou"], data["seconds_to_miou_all_masks"]):
        assert set(levels) == {"0.5", "0.6", "0.7"}
        assert all(v is None or 0 < v <= data["duration_s"] + 1e-9 for v in levels.values())
        reached = [v for v in levels.values() if v is not None]
        assert reached == sorted(reached)  # a higher level is never reached earlier


def test_builtin_stream_end_to_end(tmp_path, capsys):
    out = tmp_path / "live.json"
    rc = main(["bench", "live", "--seconds", "20", "--rate", "10", "--camera-size", "48", "64", "--window", "0.5",
               *TINY, *PUBLISH, "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads(out.read_text())
    check_report(data, 0.5)
    assert data["rate"] == 10 and data["frames"] == 200 and data["stream_s"] == pytest.approx(20, abs=0.5)
    assert data["keyframes"] > 0 and data["network"] == [32, 48]
    assert data["tag_changes"][0]["wall_s"] == 0.0 and data["tag_changes"][0]["tags"]
    assert data["node"]["mask.min_model_step"] == 0 and data["keyframe"]["min_interval_s"] == 0.5  # node defaults
    assert (tmp_path / "live.png").stat().st_size > 0
    assert "seconds to window mIoU" in text


def test_bag_with_ground_truth(scene_bag, tmp_path, capsys):
    out = tmp_path / "bag.json"
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", str(scene_bag.gt_dir), "--classes", "mug,box",
               "--rate", "10", *TINY, *PUBLISH, "--json", str(out)])
    assert rc == 0, capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["frames"] == 6 and data["classes"] == ["mug", "box"]
    check_report(data, 10.0)


def test_bag_needs_its_ground_truth(scene_bag, capsys):
    rc = main(["bench", "live", str(scene_bag.bag.path), *TINY])
    assert_user_error(rc, capsys.readouterr().err, "--gt")
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", "/nonexistent/gt", *TINY])
    assert_user_error(rc, capsys.readouterr().err, "/nonexistent/gt", "not a folder")


def test_ground_truth_of_another_bag_refused(scene_bag, tmp_path, capsys):
    gt = tmp_path / "gt"
    gt.mkdir()
    cv2.imwrite(str(gt / "000000.png"), np.zeros((48, 64), np.uint8))
    cv2.imwrite(str(gt / "000099.png"), np.zeros((48, 64), np.uint8))
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", str(gt), *TINY])
    assert_user_error(rc, capsys.readouterr().err, "000099.png", "name no frame")


def test_unknown_tags_refused(scene_bag, capsys):
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", str(scene_bag.gt_dir), "--classes", "mug,box",
               "--tags", "mug,zebra", *TINY])
    assert_user_error(rc, capsys.readouterr().err, "zebra")
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", str(scene_bag.gt_dir), "--classes", "mug", *TINY])
    assert_user_error(rc, capsys.readouterr().err, "box")  # named on the bag's tags topic


def test_builtin_stream_refuses_bag_options(capsys):
    rc = main(["bench", "live", "--tags", "mug", *TINY])
    assert_user_error(rc, capsys.readouterr().err, "built-in stream")
    rc = main(["bench", "live", "--set", "mask.min_model_step=-1", *TINY])
    assert_user_error(rc, capsys.readouterr().err, "mask.min_model_step")


def test_seconds_cuts_a_bag(scene_bag, tmp_path, capsys):
    out = tmp_path / "cut.json"
    rc = main(["bench", "live", str(scene_bag.bag.path), "--gt", str(scene_bag.gt_dir), "--classes", "mug,box",
               "--seconds", "0.001", "--rate", "10", *TINY, *PUBLISH, "--json", str(out)])
    assert rc == 0, capsys.readouterr()
    assert json.loads(out.read_text())["frames"] == 1
