"""run_arm: the classes the training tags cannot tell apart reach the scores (right_group) and the result."""

from __future__ import annotations

import math

from deal_ros.config import DealRosConfig
from deal_ros.lab.experiment import run_arm
from deal_ros.lab.synthetic import make_tabletop_scenes


def test_an_arm_on_frames_that_always_tag_mug_and_box_reports_them_as_one_group() -> None:
    frames = make_tabletop_scenes(3, 48, 64, ["mug", "box"], seed=2)
    for frame in frames:
        frame.tags = ["mug", "box"]  # a fixed scene: both in every frame
    cfg = DealRosConfig(classes=["mug", "box"]).updated({
        "model.input_height": 32, "model.input_width": 48, "model.pretrained_path": "", "train.batch_size": 2,
        "train.device": "cpu", "model.seg_head_channels": 8, "pseudo_label.merge_indistinct": True})
    result, _ = run_arm("merge", cfg, frames, frames, steps=1, pseudo_on_eval=True)
    assert result.indistinct_classes == [["mug", "box"]]
    for quality in (result.pseudo_quality, result.mask_quality):
        assert math.isnan(quality["right_group"]) or quality["right_group"] >= quality["right_class"]
