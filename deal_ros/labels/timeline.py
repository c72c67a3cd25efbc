"""Mask quality over time: mIoU per window of wall-clock seconds, and how long until it first reaches a level.

Why: a robot's user asks "after how many seconds are the masks good enough?", which a final mIoU cannot answer.
Each window accumulates one confusion matrix over the masks published in it (the set-level protocol of
deal_ros.labels.metrics, so a window is not an average of per-frame mIoUs), beside the training steps and
their mean loss that fell into it. Plain numpy on label maps, beside metrics.py rather than in the lab: a recorder
of /deal/mask on a real ROS 2 scores its masks with it without the lab extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deal_ros.labels.metrics import ConfusionMatrix

WINDOW_S = 10.0
"""Default window length (s)."""
THRESHOLDS = (0.5, 0.6, 0.7)
"""mIoU levels whose first time seconds_to_miou reports."""


@dataclass
class Window:
    """Wall-clock seconds [start_s, end_s) since the stream started."""

    start_s: float
    end_s: float
    miou: float | None
    """mIoU of the published masks with ground truth in the window (None: none)."""
    masks: int
    """Masks published in the window."""
    steps: int
    """Training steps finished in the window."""
    loss: float | None
    """Mean loss of those steps (None: none)."""
    miou_all: float | None
    """mIoU of every mask computed in the window, withheld (warming-up) ones included."""
    masks_all: int


@dataclass
class _Counts:
    published: ConfusionMatrix
    every: ConfusionMatrix
    masks: int = 0
    masks_all: int = 0
    losses: list[float] = field(default_factory=list)


class TimelineScorer:
    """Collects masks (with their ground truth) and training steps by wall time; `windows(end_s)` scores them.

    num_classes counts background (id 0); ground-truth pixels equal to ignore_index are not scored. Times at or
    after end_s count in the last window.
    """

    def __init__(self, num_classes: int, window_s: float = WINDOW_S, class_names: Sequence[str] | None = None,
                 ignore_index: int = 255) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.num_classes = num_classes
        self.window_s = window_s
        self.class_names = class_names
        self.ignore_index = ignore_index
        self._counts: dict[int, _Counts] = {}

    def _window(self, wall_s: float) -> _Counts:
        index = max(0, math.floor(wall_s / self.window_s))
        counts = self._counts.get(index)
        if counts is None:
            def matrix() -> ConfusionMatrix:
                return ConfusionMatrix(self.num_classes, self.class_names, self.ignore_index)

            counts = self._counts[index] = _Counts(matrix(), matrix())
        return counts

    def add_mask(self, wall_s: float, mask: np.ndarray, gt: np.ndarray | None, published: bool = True) -> None:
        """A mask (H, W) computed at wall_s; gt (H, W) of its frame, None when the frame has none (counted only)."""
        counts = self._window(wall_s)
        counts.masks_all += 1
        counts.masks += published
        if gt is None:
            return
        counts.every.update(mask, gt)
        if published:
            counts.published.update(mask, gt)

    def add_step(self, wall_s: float, loss: float) -> None:
        self._window(wall_s).losses.append(float(loss))

    def windows(self, end_s: float) -> list[Window]:
        """Every window from 0 to end_s (the last one ends at end_s), later events folded into the last."""
        last = max(0, math.ceil(end_s / self.window_s) - 1)
        merged: dict[int, list[_Counts]] = {}
        for index, counts in self._counts.items():
            merged.setdefault(min(index, last), []).append(counts)
        result = []
        for index in range(last + 1):
            parts = merged.get(index, [])
            published = ConfusionMatrix(self.num_classes, self.class_names, self.ignore_index)
            every = ConfusionMatrix(self.num_classes, self.class_names, self.ignore_index)
            losses: list[float] = []
            for part in parts:
                published.merge(part.published)
                every.merge(part.every)
                losses += part.losses
            result.append(Window(
                start_s=index * self.window_s, end_s=min((index + 1) * self.window_s, max(end_s, 0.0)),
                miou=_miou(published), masks=sum(p.masks for p in parts), steps=len(losses),
                loss=float(np.mean(losses)) if losses else None, miou_all=_miou(every),
                masks_all=sum(p.masks_all for p in parts)))
        return result


def _miou(matrix: ConfusionMatrix) -> float | None:
    return matrix.miou() if matrix.total else None


def seconds_to_miou(windows: Sequence[Window], thresholds: Sequence[float] = THRESHOLDS,
                    all_masks: bool = False) -> dict[str, float | None]:
    """Per threshold (keyed '0.5'), the end_s of the first window whose mIoU reaches it (None: never): by then
    the masks of a whole window were that good. all_masks: Window.miou_all instead of the published masks'."""
    result: dict[str, float | None] = {}
    for threshold in thresholds:
        value = None
        for window in windows:
            miou = window.miou_all if all_masks else window.miou
            if miou is not None and miou >= threshold:
                value = window.end_s
                break
        result[f"{threshold:g}"] = value
    return result
