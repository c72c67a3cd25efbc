"""LabelQuality: objects-vs-background IoU, right and wrong class shares and background-as-object frames, on
hand-made label images with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deal_ros.labels.metrics import LabelQuality


def test_hand_computed_example() -> None:
    gt = np.array([[0, 0, 1, 1],
                   [0, 2, 2, 1],
                   [0, 0, 0, 0]])
    pred = np.array([[0, 3, 1, 2],
                     [255, 2, 1, 0],
                     [0, 0, 0, 0]])
    q = LabelQuality()
    q.update(pred, gt)
    # objects: gt 5 px, pred 5 px (255 is background), both 4 -> IoU 4 / 6
    assert q.objects_iou == pytest.approx(4 / 6)
    # found 4 (gt object & pred object): right 2 (the 1 at (0,2), the 2 at (1,1)) -> 1/2
    assert q.right_class == pytest.approx(2 / 4)
    # two tagged classes (1, 2): of 5 object px, 2 carry the other tagged class (a 2 on a 1, a 1 on a 2) -> 2/5
    assert q.wrong_class == pytest.approx(2 / 5)
    # background as object: 1 px (the 3) of 5 object px = 20 % > 10 % -> this frame counts
    assert q.background_as_object == 1.0


def test_wrong_class_counts_only_frames_with_two_tagged_classes_and_only_tagged_classes() -> None:
    q = LabelQuality()
    one = np.array([[1, 1, 0, 0]])
    q.update(np.array([[2, 2, 0, 0]]), one)  # a single tagged object: not counted
    assert math.isnan(q.wrong_class)
    gt = np.array([[1, 1, 2, 2]])
    q.update(np.array([[3, 2, 2, 2]]), gt, tagged=[1, 2])  # the 3 is wrong but untagged; the 2 on a 1 counts
    assert q.wrong_class == pytest.approx(1 / 4)
    assert q.right_class == pytest.approx((0 + 2) / (2 + 4))


def test_background_as_object_is_relative_to_the_object_area() -> None:
    gt = np.zeros((10, 10), np.int64)
    gt[:5, :4] = 1  # 20 object px
    pred = gt.copy()
    pred[9, :2] = 1  # 2 background px as an object: 10 %, not more -> not counted
    q = LabelQuality()
    q.update(pred, gt)
    assert q.background_as_object == 0.0
    pred[9, 2] = 1  # 3 px: 15 % of the object area -> counted
    q.update(pred, gt)
    q.update(pred, np.zeros_like(gt))  # no ground-truth object: not a frame of this share
    assert q.background_as_object == pytest.approx(1 / 2)
    assert q.frames == 2


def test_empty_and_ignored() -> None:
    q = LabelQuality()
    assert all(math.isnan(v) for v in q.as_dict().values())
    q.update(np.array([[1, 1]]), np.array([[255, 255]]))  # ground-truth ignore: skipped
    assert math.isnan(q.objects_iou)
    with pytest.raises(ValueError, match="does not match"):
        q.update(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64))


def test_right_group_counts_a_class_of_the_same_group_as_right() -> None:
    gt = np.array([[1, 1, 2, 2, 3, 0]])
    pred = np.array([[2, 1, 1, 2, 1, 0]])  # 1 and 2 swapped on two pixels, 3 taken for 1
    plain, grouped = LabelQuality(), LabelQuality()
    plain.update(pred, gt)
    grouped.update(pred, gt, groups=[(1, 2)])
    assert plain.right_class == plain.right_group == pytest.approx(2 / 5), "without groups: the right class"
    assert grouped.right_class == pytest.approx(2 / 5)
    assert grouped.right_group == pytest.approx(4 / 5), "1 <-> 2 counts, 3 -> 1 does not"
    assert grouped.as_dict()["right_group"] == grouped.right_group
