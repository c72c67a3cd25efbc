"""Which camera frames enter the training buffer: not too often, and only when the view changed.

A robot standing still streams 30 near-identical frames a second; buffering them all would fill
the buffer with one view and make class balancing meaningless. A frame is a keyframe when at
least `min_interval_s` passed since the last one and the view moved (thumbnail difference), or
`max_interval_s` passed, or the tags changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from deal_ros.config import KeyframeConfig

THUMB_SIZE = (32, 24)
"""(width, height) of the grey thumbnail compared between frames: cheap and insensitive to noise."""


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (24, 32) float32 grey in [0, 1] (area-averaged, so sensor noise cancels)."""
    small = cv2.resize(rgb, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


@dataclass
class KeyframeDecision:
    accept: bool
    reason: str
    motion: float


class KeyframeGate:
    """Decides per frame; `stamp_s` is the message stamp (sim time in replays), not the wall clock."""

    def __init__(self, min_interval_s: float = 0.5, max_interval_s: float = 5.0,
                 motion_threshold: float = 0.04) -> None:
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self.motion_threshold = motion_threshold
        self.accepted = 0
        self.rejected = 0
        self._last_stamp: float | None = None
        self._last_thumb: np.ndarray | None = None
        self._last_tags: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, keyframe: KeyframeConfig) -> KeyframeGate:
        """The gate of the config's keyframe section: the trainer node's and `deal-ros train`'s."""
        gate = cls()
        gate.configure(keyframe)
        return gate

    def configure(self, keyframe: KeyframeConfig) -> None:
        """Take the keyframe section's values (a run-time parameter change); what was seen is kept."""
        self.min_interval_s = keyframe.min_interval_s
        self.max_interval_s = keyframe.max_interval_s
        self.motion_threshold = keyframe.motion_threshold

    def reset(self) -> None:
        self._last_stamp = None
        self._last_thumb = None
        self._last_tags = None

    def decide(self, stamp_s: float, rgb: np.ndarray | Callable[[], np.ndarray],
               tags: Sequence[str]) -> KeyframeDecision:
        """`rgb` may be a function that decodes the frame: it is called only when the interval allows a take."""
        tags = tuple(tags)
        if self._last_stamp is None or stamp_s < self._last_stamp:
            reason = "first frame" if self._last_stamp is None else "time went backwards (bag restarted?)"
            return self._take(stamp_s, thumbnail(rgb() if callable(rgb) else rgb), tags, reason, 1.0)
        elapsed = stamp_s - self._last_stamp
        if elapsed < self.min_interval_s:
            return self._skip("too soon", 0.0)
        thumb = thumbnail(rgb() if callable(rgb) else rgb)
        motion = float(np.mean(np.abs(thumb - self._last_thumb))) if self._last_thumb is not None else 1.0
        if tags != self._last_tags:
            return self._take(stamp_s, thumb, tags, "tags changed", motion)
        if motion >= self.motion_threshold:
            return self._take(stamp_s, thumb, tags, "view changed", motion)
        if self.max_interval_s > 0 and elapsed >= self.max_interval_s:
            return self._take(stamp_s, thumb, tags, "max interval", motion)
        return self._skip("no motion", motion)

    def _take(self, stamp_s: float, thumb: np.ndarray, tags: tuple[str, ...], reason: str,
              motion: float) -> KeyframeDecision:
        self._last_stamp, self._last_thumb, self._last_tags = stamp_s, thumb, tags
        self.accepted += 1
        return KeyframeDecision(True, reason, motion)

    def _skip(self, reason: str, motion: float) -> KeyframeDecision:
        self.rejected += 1
        return KeyframeDecision(False, reason, motion)
