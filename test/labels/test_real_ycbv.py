"""Real frames: on real YCB-Video depth the default pseudo-labels find the objects, and the contrast between the
sample's scenes names them (issue 21's floors).

A few of the sample's frames (four per video, every video): the depth prior has to cope with the Xtion's holes at
object borders, the missing far background and the keyboard and cables on the table; within a video the same
objects are in every frame, so only the other videos can tell which is which. The floors are set below what these
tests measured (see the README's real-frames table for the full benchmark).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.cli.quality import classes_from_index
from deal_ros.config import DealRosConfig, PseudoLabelConfig
from deal_ros.frames.tags import tags_to_vector
from deal_ros.io.ground_truth import load_bag
from deal_ros.lab.experiment import run_arm
from deal_ros.labels.objects import object_parts, place_by_contrast
from deal_ros.labels.part_names import PartBank, part_looks
from deal_ros.labels.pseudo_labels import fit_depth_prior, remember_frame_parts

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


PLACED_RIGHT_FLOOR = 0.5
"""Share of the object pixels of the parts the contrast between tag patterns names (pseudo_label.part_contrast) that
get the right class, on the same frames, no training. Measured by this test: 0.616 (0.648 on all 81 frames, 0.723
at 128x160); picking one of a frame's tags at random for each part would name about a third right."""


def test_the_contrast_between_scenes_names_real_objects(ycbv_sample) -> None:
    gt_dir = ycbv_sample / "gt"
    classes = classes_from_index(gt_dir)
    assert classes is not None
    frames = load_bag(str(ycbv_sample / "bag"), str(gt_dir), SIZE, classes, 10**9)[::5]
    cfg = PseudoLabelConfig()
    bank = PartBank(len(classes))
    seen = []
    for frame in frames:
        rgb = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float() / 255
        depth = torch.from_numpy(np.nan_to_num(frame.depth_m.astype(np.float32)))[None, None]
        tags = torch.from_numpy(tags_to_vector(frame.tags, classes))[None]
        remember_frame_parts(bank, rgb, depth, tags, cfg)
        parts, kept = object_parts(fit_depth_prior(depth, cfg).prior[0, 0].numpy() > 0, depth[0, 0].numpy())
        seen.append((frame.gt_mask, parts, kept, part_looks(frame.rgb, parts, kept), tags[0].numpy()))
    right = named = 0
    for gt, parts, kept, looks, tags in seen:
        tagged = np.flatnonzero(tags)
        for part, tag in place_by_contrast(bank.scores(tags, looks)[tagged]).items():
            truth = gt[(parts == kept[part]) & (gt > 0)]
            named += len(truth)
            right += int((truth == tagged[tag] + 1).sum())
    print(f"{len(frames)} real frames: {named} object pixels named by contrast, {right / max(named, 1):.3f} right")
    assert named > 0.2 * sum(int((gt > 0).sum()) for gt, *_ in seen), "most frames hold a class the contrast names"
    assert right / named >= PLACED_RIGHT_FLOOR
