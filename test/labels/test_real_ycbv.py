"""Real frames: the default recipe's pseudo-labels on real YCB-Video depth find the objects (issue 21's floor).

A short run on a few of the sample's frames (four per video, every video): the depth prior has to cope with the
Xtion's holes at object borders, the missing far background and the keyboard and cables on the table. The floor
is set below what this run measured (see the README's real-frames table for the full benchmark).
"""

from __future__ import annotations

import pytest

from deal_ros.cli.quality import classes_from_index
from deal_ros.config import DealRosConfig
from deal_ros.io.ground_truth import load_bag
from deal_ros.lab.experiment import run_arm

pytestmark = pytest.mark.slow

SIZE = (96, 128)
STEPS = 60
OBJECTS_IOU_FLOOR = 0.60
"""Objects vs background IoU of the default pseudo-labels, any class. Measured by this test: 0.634 with the defaults
(0.640 with the 1 % tolerance and no extra planes of before), 0.588 with pseudo_label.slab_height off (the keyboard
and paper on the table taken for objects)."""


def test_default_pseudo_labels_find_the_real_objects(ycbv_sample) -> None:
    gt_dir = ycbv_sample / "gt"
    classes = classes_from_index(gt_dir)
    assert classes is not None
    frames = load_bag(str(ycbv_sample / "bag"), str(gt_dir), SIZE, classes, 10**9)[::5]
    cfg = DealRosConfig(classes=classes).updated({
        "model.input_height": SIZE[0], "model.input_width": SIZE[1], "train.device": "cpu",
        "checkpoint.directory": "unused"})
    result, _ = run_arm("default", cfg, frames, frames, STEPS)
    print(f"{len(frames)} real frames, {STEPS} steps: pseudo-label quality {result.pseudo_quality}")
    assert result.pseudo_quality["objects_iou"] >= OBJECTS_IOU_FLOOR
