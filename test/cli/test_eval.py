"""`deal-ros eval`: mIoU of label PNG folders, against ground truth from the bag's known scenes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from clitools import CLASSES, NUM_FRAMES, assert_user_error, run_cli

from deal_ros.cli import main

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop


def test_eval_labelled_masks_against_ground_truth(labelled, scene_bag, tmp_path):
    report = tmp_path / "miou.json"
    result = run_cli("eval", str(labelled.out / "mask"), str(scene_bag.gt_dir), "--json", str(report))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("mean") for line in lines)
    assert [line.split()[0] for line in lines if line.split()[:1] in (["background"], ["mug"], ["box"])] == [
        "background", *CLASSES]  # names from labels/classes.json
    data = json.loads(report.read_text())
    assert data["files"] == NUM_FRAMES and set(data["iou"]) == {"background", *CLASSES}
    assert data["total_pixels"] == NUM_FRAMES * 48 * 64
    assert data["miou"] is None or 0.0 <= data["miou"] <= 1.0


def _write(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), image)


@pytest.fixture
def folders(tmp_path):
    gt = np.zeros((4, 6), np.uint8)
    gt[:, 3:] = 1
    gt[0, 0] = 255  # ignored in the ground truth
    pred = gt.copy()
    pred[0, 0] = 1
    pred[3, 5] = 0  # one object pixel missed
    pred[1, 1] = 255  # predicted ignore: background by default
    for name in ("000000.png", "000001.png"):
        _write(tmp_path / "gt", name, gt)
        _write(tmp_path / "pred", name, pred)
    return tmp_path / "pred", tmp_path / "gt"


def test_exact_iou_and_ignore_modes(folders, tmp_path, capsys):
    pred, gt = folders
    classes = tmp_path / "names.json"
    classes.write_text(json.dumps(["background", "mug"]))
    out = tmp_path / "r.json"
    assert main(["eval", str(pred), str(gt), "--classes-json", str(classes), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    # per frame: 11 bg gt pixels all right (one predicted ignore -> background), 12 mug of which 11 right
    assert data["iou"] == {"background": pytest.approx(11 / 12), "mug": pytest.approx(11 / 12)}
    assert data["total_pixels"] == 2 * 23
    assert "mug" in capsys.readouterr().out
    assert main(["eval", str(pred), str(gt), "--skip-ignore", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["total_pixels"] == 2 * 22 and data["iou"]["background"] == pytest.approx(10 / 11)
    assert set(data["iou"]) == {"background", "class_1"}  # no names given: ids numbered


def test_eval_errors(folders, tmp_path, capsys):
    pred, gt = folders
    for i in range(2, 9):
        _write(gt, f"{i:06d}.png", np.zeros((4, 6), np.uint8))
    rc = main(["eval", str(pred), str(gt)])
    assert_user_error(rc, capsys.readouterr().err, "7 of 9 ground-truth file(s) have no prediction",
                      "000002.png", "(2 more)")
    for i in range(2, 9):
        (gt / f"{i:06d}.png").unlink()
    _write(pred, "000001.png", np.zeros((5, 6), np.uint8))
    assert_user_error(main(["eval", str(pred), str(gt)]), capsys.readouterr().err, "000001.png", "6x5", "6x4")
    _write(pred, "000001.png", np.full((4, 6), 7, np.uint8))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["background", "mug"]}))
    rc = main(["eval", str(pred), str(gt), "--classes-json", str(classes)])
    assert_user_error(rc, capsys.readouterr().err, "label id 7", "outside 0..1")
    _write(pred, "000001.png", np.zeros((4, 6, 3), np.uint8))
    assert_user_error(main(["eval", str(pred), str(gt)]), capsys.readouterr().err, "3-channel")
    assert_user_error(main(["eval", str(tmp_path / "nope"), str(gt)]), capsys.readouterr().err, "not found")
