"""ConfusionMatrix: hand-computed IoU, ignore handling, accumulation and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deal_ros.labels.metrics import ConfusionMatrix


def test_hand_computed_example() -> None:
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3, ["bg", "mug", "box"])
    cm.update(pred, gt)
    # bg: tp 1, gt 2, pred 2 -> 1/3; mug: tp 2, gt 2, pred 3 -> 2/3; box: tp 1, gt 2, pred 1 -> 1/2
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_absent_class_is_nan_and_excluded_from_mean() -> None:
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    iou = cm.iou()
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 0.5) / 2)
    d = cm.as_dict()
    assert d["iou"]["class_2"] is None
    json.dumps(d)  # JSON-friendly


def test_empty_matrix() -> None:
    cm = ConfusionMatrix(2)
    assert np.isnan(cm.miou()) and np.isnan(cm.pixel_accuracy())
    assert json.loads(cm.to_json())["miou"] is None
    assert "n/a" in cm.format_table()


def test_gt_ignore_is_skipped() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 1, 0]), np.array([255, 1, 0]))
    assert cm.total == 2
    assert cm.miou() == pytest.approx(1.0)


def test_pred_ignore_counts_as_background_by_default() -> None:
    gt = np.array([0, 1, 1, 0])
    pred = np.array([255, 255, 1, 0])
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[2, 0], [1, 1]]
    np.testing.assert_allclose(cm.iou(), [2 / 3, 1 / 2])


def test_pred_ignore_skipped_when_asked() -> None:
    gt = np.array([0, 1, 1, 0])
    pred = np.array([255, 255, 1, 0])
    cm = ConfusionMatrix(2, pred_ignore_as_background=False)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    assert cm.miou() == pytest.approx(1.0)


def test_batches_equal_one_big_update_and_merge() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(6, 16, 20))
    pred = rng.integers(0, 3, size=(6, 16, 20))
    gt[gt == 3] = 255
    pred[:, :2] = 255
    whole = ConfusionMatrix(3)
    whole.update(pred, gt)
    parts = ConfusionMatrix(3)
    for p, g in zip(pred, gt, strict=True):
        parts.update(torch.from_numpy(p), torch.from_numpy(g))  # tensors too
    np.testing.assert_array_equal(whole.matrix, parts.matrix)
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(pred[:3], gt[:3])
    b.update(pred[3:], gt[3:])
    np.testing.assert_array_equal(a.merge(b).matrix, whole.matrix)
    assert a.miou() == pytest.approx(whole.miou())


def test_shape_mismatch_names_both_shapes() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_label_out_of_range() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="pred holds label 3"):
        cm.update(np.array([3, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="gt holds label 7"):
        cm.update(np.array([0, 0]), np.array([7, 0]))
    with pytest.raises(ValueError, match="-1"):
        cm.update(np.array([-1, 0]), np.array([0, 0]))
    assert cm.total == 0  # nothing was half-added


def test_bad_construction_and_merge() -> None:
    with pytest.raises(ValueError):
        ConfusionMatrix(0)
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ["a", "b"])
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ignore_index=2)
    with pytest.raises(ValueError):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="integer"):
        ConfusionMatrix(3).update(np.array([0.5]), np.array([0]))


def test_format_table_lists_every_class_and_mean() -> None:
    cm = ConfusionMatrix(3, ["background", "mug", "box"])
    cm.update(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    table = cm.format_table()
    lines = table.splitlines()
    for name in ("background", "mug", "box", "mean"):
        assert any(line.startswith(name) for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned
    assert "100.00%" in table
    d = cm.as_dict()
    assert d["gt_pixels"]["mug"] == 2 and d["pred_pixels"]["box"] == 2 and d["total_pixels"] == 4
