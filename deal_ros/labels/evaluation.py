"""Scoring labels against ground truth: pseudo-labels (CAMs + tags) and masks (no tags), per class.

Ignore (255) pseudo-label pixels count as background. Used by `deal-ros train --val-bag` during training and
by the lab's experiments (`deal-ros bench quality`): besides the confusion matrices, the label-quality shares of
deal_ros.labels.metrics.LabelQuality (objects vs background, right and wrong class, background as object).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deal_ros.config import DealRosConfig
from deal_ros.inference.segmenter import Segmenter
from deal_ros.labels.metrics import ConfusionMatrix, LabelQuality


class LabelledFrame(Protocol):
    rgb: np.ndarray
    depth_m: np.ndarray
    gt_mask: np.ndarray
    tags: list[str]

def per_class_iou(matrix: ConfusionMatrix, names: Sequence[str]) -> dict[str, float]:
    """Class name -> IoU of a confusion matrix whose rows are `names`."""
    return {name: float(iou) for name, iou in zip(names, matrix.iou(), strict=True)}

@dataclass
class Evaluation:
    """Confusion matrices and label-quality counts of pseudo-labels and masks, and the per-class pseudo-label
    cover."""

    pseudo: ConfusionMatrix
    masks: ConfusionMatrix
    pseudo_cover: dict[str, float]
    pseudo_quality: LabelQuality
    mask_quality: LabelQuality

def evaluate(cfg: DealRosConfig, segmenter: Segmenter, pseudo_frames: Sequence[LabelledFrame],
             mask_frames: Sequence[LabelledFrame], groups: Sequence[Sequence[int]] = ()) -> Evaluation:
    """Pseudo-labels (from CAMs + the frames' tags; 255 counts as background) on pseudo_frames, masks (no
    tags) on mask_frames, against the ground truth. A frame's tagged classes (for the wrong-class share) are its
    tags; groups: the classes (0-based, as TagContrast.groups()) the training tags could not tell apart, one class
    each for the right-group share."""
    label_groups = [tuple(k + 1 for k in group) for group in groups]
    names = ["background", *cfg.classes]
    pseudo = ConfusionMatrix(len(names), names)
    masks = ConfusionMatrix(len(names), names)
    pseudo_quality, mask_quality = LabelQuality(), LabelQuality()
    cover: dict[str, list[float]] = {name: [] for name in cfg.classes}
    for frame in pseudo_frames:
        result = segmenter(frame.rgb, frame.depth_m, frame.tags)
        assert result.pseudo_label is not None
        tagged = [cfg.classes.index(tag) + 1 for tag in frame.tags]
        pseudo.update(result.pseudo_label, frame.gt_mask)
        pseudo_quality.update(result.pseudo_label, frame.gt_mask, tagged, label_groups)
        for tag in frame.tags:
            cover[tag].append(float((result.pseudo_label == cfg.classes.index(tag) + 1).mean()))
    for frame in mask_frames:
        mask = segmenter(frame.rgb).mask
        masks.update(mask, frame.gt_mask)
        mask_quality.update(mask, frame.gt_mask, [cfg.classes.index(tag) + 1 for tag in frame.tags], label_groups)
    return Evaluation(pseudo, masks, {name: float(np.mean(v)) for name, v in cover.items() if v}, pseudo_quality,
                      mask_quality)
