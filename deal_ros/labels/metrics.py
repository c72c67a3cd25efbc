"""Segmentation metrics: a confusion matrix and label-quality counts accumulated over a whole set.

Why a set-level matrix: mIoU averaged per image over-weights small frames and is undefined for
classes absent from an image; accumulating counts over all frames and taking IoU at the end is
the standard (VOC) protocol. Pseudo-labels carry an ignore value (255); by default it counts as
background in the prediction (an unsure pixel is not a detection), and is skipped in the ground truth.

mIoU alone hides which half of a labeller fails: finding objects (geometry) or naming them (classes). LabelQuality
counts both apart: objects-vs-background IoU, the right-class share of the object pixels found (and the same with
classes the tags cannot tell apart counted as one, deal_ros.labels.class_groups), the wrong-class
share in frames with several tagged objects (neighbours taking each other's class), and how often background
structure (a tray's or shelf's walls) is labelled as an object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["BACKGROUND_AS_OBJECT_SHARE", "ConfusionMatrix", "LabelQuality"]


def _to_numpy(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "iub":
        if x.dtype.kind == "f" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
            return x.astype(np.int64)
        raise ValueError(f"{what} must hold integer class ids, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Counts (gt, pred) pixel pairs; row = ground truth, column = prediction.

    num_classes includes background (index 0). Ground-truth pixels equal to ignore_index are
    skipped. Predicted ignore_index pixels count as background when pred_ignore_as_background
    (default), else they are skipped as well.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        pred_ignore_as_background: bool = True,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background included), got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class id (num_classes {num_classes})"
            )
        if class_names is None:
            class_names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names]
        self.ignore_index = int(ignore_index)
        self.pred_ignore_as_background = bool(pred_ignore_as_background)
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        """(num_classes, num_classes) int64 pixel counts, [gt, pred]."""

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add one frame or a batch: pred and gt are integer label maps of the same shape (any rank)."""
        p = _to_numpy(pred, "pred")
        g = _to_numpy(gt, "gt")
        if p.shape != g.shape:
            raise ValueError(f"pred shape {tuple(p.shape)} does not match gt shape {tuple(g.shape)}")
        p, g = p.ravel(), g.ravel()
        keep = g != self.ignore_index
        pred_ignored = p == self.ignore_index
        if self.pred_ignore_as_background:
            p = np.where(pred_ignored, 0, p)
        else:
            keep &= ~pred_ignored
        p, g = p[keep], g[keep]
        n = self.num_classes
        for name, arr in (("gt", g), ("pred", p)):
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                bad = arr[(arr < 0) | (arr >= n)]
                raise ValueError(
                    f"{name} holds label {int(bad[0])} outside [0, {n - 1}] "
                    f"(ignore_index {self.ignore_index})"
                )
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix
        return self

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU (num_classes,) float64; NaN where a class is absent from both gt and pred."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (background included); NaN when nothing was counted."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (NaN -> None): miou, pixel accuracy, per-class IoU and counts."""

        def clean(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        iou = self.iou()
        return {
            "miou": clean(self.miou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "iou": {name: clean(v) for name, v in zip(self.class_names, iou, strict=True)},
            "gt_pixels": {name: int(v) for name, v in zip(self.class_names, self.matrix.sum(1), strict=True)},
            "pred_pixels": {
                name: int(v) for name, v in zip(self.class_names, self.matrix.sum(0), strict=True)
            },
            "total_pixels": self.total,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def format_table(self) -> str:
        """Aligned text table: one row per class (IoU, gt and predicted pixels) and the mean."""
        iou = self.iou()
        width = max(len("class"), len("mean"), *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'IoU':>7}  {'gt px':>12}  {'pred px':>12}"]
        lines.append("-" * len(lines[0]))
        gt_px, pred_px = self.matrix.sum(1), self.matrix.sum(0)
        for name, v, g, p in zip(self.class_names, iou, gt_px, pred_px, strict=True):
            val = "    n/a" if not np.isfinite(v) else f"{100 * v:6.2f}%"
            lines.append(f"{name:<{width}}  {val:>7}  {int(g):>12d}  {int(p):>12d}")
        lines.append("-" * len(lines[0]))
        m = self.miou()
        val = "    n/a" if not np.isfinite(m) else f"{100 * m:6.2f}%"
        lines.append(f"{'mean':<{width}}  {val:>7}  {int(gt_px.sum()):>12d}  {int(pred_px.sum()):>12d}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, miou={self.miou():.4f}, pixels={self.total})"


BACKGROUND_AS_OBJECT_SHARE = 0.1
"""A frame counts as 'background labelled as an object' when its ground-truth background pixels labelled as some
object exceed this share of the frame's ground-truth object area (walls of a tray or shelf, a table edge standing
out): relative to the objects, so that one stray blob on a large frame does not count and a wall as large as an
object does."""


class LabelQuality:
    """Set-level counts of what a label map gets right beyond per-class IoU (ignore 255 in the prediction counts as
    background; ground-truth 255 pixels are skipped).

    objects_iou: IoU of "any object" (id > 0) against background. right_class: among ground-truth object pixels
    predicted as some object, the share with the right class. right_group: the same, a class of the ground truth's
    group (classes the tags cannot tell apart, given to update) counting as right (= right_class without groups).
    wrong_class: on frames with two or more tagged
    classes, the share of ground-truth object pixels labelled with another of the frame's tagged classes.
    background_as_object: the share of frames (with ground-truth objects) whose background pixels labelled as an
    object exceed BACKGROUND_AS_OBJECT_SHARE of their object area. Each is NaN when nothing was counted.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = int(ignore_index)
        self.object_tp = self.object_fp = self.object_fn = 0
        self.found = self.found_right = self.found_right_group = 0
        self.multi_object_pixels = self.multi_wrong_tagged = 0
        self.frames = self.frames_background_as_object = 0

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor,
               tagged: Sequence[int] | None = None, groups: Sequence[Sequence[int]] = ()) -> None:
        """Add one frame: pred and gt are (H, W) integer label maps; tagged: the frame's tagged class ids (default:
        the classes its ground truth holds); groups: tuples of label ids (class k = k + 1, as in the maps) that count
        as one class for right_group."""
        p = _to_numpy(pred, "pred")
        g = _to_numpy(gt, "gt")
        if p.shape != g.shape:
            raise ValueError(f"pred shape {tuple(p.shape)} does not match gt shape {tuple(g.shape)}")
        keep = g != self.ignore_index
        p, g = np.where(p == self.ignore_index, 0, p)[keep], g[keep]
        gt_object, pred_object = g > 0, p > 0
        self.object_tp += int((gt_object & pred_object).sum())
        self.object_fp += int((~gt_object & pred_object).sum())
        self.object_fn += int((gt_object & ~pred_object).sum())
        found = gt_object & pred_object
        self.found += int(found.sum())
        same = p == g
        self.found_right += int((found & same).sum())
        if groups:
            canon = np.arange(max(int(p.max(initial=0)), int(g.max(initial=0)),
                                  *(int(c) for group in groups for c in group)) + 1)
            for group in groups:
                canon[list(group)] = min(group)
            same = canon[p] == canon[g]
        self.found_right_group += int((found & same).sum())
        ids = set(np.unique(g[gt_object]).tolist()) if tagged is None else {int(c) for c in tagged if c > 0}
        if len(ids) >= 2:
            self.multi_object_pixels += int(gt_object.sum())
            self.multi_wrong_tagged += int((found & (p != g) & np.isin(p, list(ids))).sum())
        area = int(gt_object.sum())
        if area:
            self.frames += 1
            if int((~gt_object & pred_object).sum()) > BACKGROUND_AS_OBJECT_SHARE * area:
                self.frames_background_as_object += 1

    @staticmethod
    def _share(part: int, whole: int) -> float:
        return part / whole if whole else float("nan")

    @property
    def objects_iou(self) -> float:
        return self._share(self.object_tp, self.object_tp + self.object_fp + self.object_fn)

    @property
    def right_class(self) -> float:
        return self._share(self.found_right, self.found)

    @property
    def right_group(self) -> float:
        return self._share(self.found_right_group, self.found)

    @property
    def wrong_class(self) -> float:
        return self._share(self.multi_wrong_tagged, self.multi_object_pixels)

    @property
    def background_as_object(self) -> float:
        return self._share(self.frames_background_as_object, self.frames)

    def as_dict(self) -> dict[str, float]:
        """The five shares by name (NaN where nothing was counted)."""
        return {"objects_iou": self.objects_iou, "right_class": self.right_class, "right_group": self.right_group,
                "wrong_class": self.wrong_class,
                "background_as_object": self.background_as_object}
