"""Classes of depth parts from the contrast between tag patterns: what the frames that tag a class share.

A robot's data is one scene seen for many frames: the same objects are in every frame of it, so a classifier
trained on tags learns each scene's look (its table, its light) as much as its objects, and names the objects of a
scene by chance. The contrast between scenes can name them: the part that is class k has a look-alike in the
frames of other tag patterns that tag k, and none in the frames that do not tag k. PartBank keeps the looks of the
parts seen (the depth parts of deal_ros.labels.objects, described by colour histograms, which do not change as the
network trains) per tag pattern, and scores a frame's parts for its tags by that contrast. Classes that no other
pattern tells apart (tagged in no other pattern, or in every one) get no score: the CAM decides for them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np

__all__ = ["HUE_SATURATION_BINS", "PartBank", "part_looks"]

HUE_SATURATION_BINS = ((8, 4), (16, 4))
"""Hue x saturation bins of the histograms that describe a part, coarse and fine (a colour near a bin edge of one
is inside a bin of the other)."""


def part_looks(rgb: np.ndarray, parts: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """rgb (H, W, 3) uint8, parts (H, W) int part ids, kept (P,) the ids to describe -> (P, D) float32 unit rows.

    Each row holds the square roots of the part's normalised hue x saturation histograms at HUE_SATURATION_BINS,
    concatenated: the dot product of two rows is their mean Bhattacharyya coefficient (1 = the same colours)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    hue, saturation = hsv[..., 0].astype(np.int64), hsv[..., 1].astype(np.int64)  # hue 0..179, saturation 0..255
    index = np.full(int(parts.max(initial=0)) + 1, -1, np.int64)
    index[np.asarray(kept, np.int64)] = np.arange(len(kept))
    row = index[parts]
    inside = row >= 0
    blocks = []
    for hue_bins, sat_bins in HUE_SATURATION_BINS:
        bins = (hue[inside] * hue_bins // 180) * sat_bins + saturation[inside] * sat_bins // 256
        counts = np.bincount(row[inside] * hue_bins * sat_bins + bins, minlength=len(kept) * hue_bins * sat_bins)
        counts = counts.reshape(len(kept), hue_bins * sat_bins).astype(np.float64)
        blocks.append(np.sqrt(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)))
    looks = np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))
    return looks.astype(np.float32)


class PartBank:
    """The looks of the parts of the frames seen, per tag pattern, to score new parts against.

    Per pattern the newest `frames_per_pattern` frames are kept; beyond `max_patterns` patterns the one updated
    longest ago is dropped. Thread-safe: the trainer adds while a segmenter scores.
    """

    def __init__(self, num_classes: int, frames_per_pattern: int = 8, max_patterns: int = 512) -> None:
        if num_classes < 1 or frames_per_pattern < 1 or max_patterns < 2:
            raise ValueError("need num_classes >= 1, frames_per_pattern >= 1 and max_patterns >= 2")
        self.num_classes = int(num_classes)
        self.frames_per_pattern = int(frames_per_pattern)
        self.max_patterns = int(max_patterns)
        self._lock = threading.Lock()
        self._frames: OrderedDict[bytes, list[np.ndarray]] = OrderedDict()
        self._stacked: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        """Frames held."""
        with self._lock:
            return sum(len(frames) for frames in self._frames.values())

    @property
    def patterns(self) -> int:
        """Distinct tag patterns held."""
        with self._lock:
            return len(self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._stacked = None

    def add(self, tags: np.ndarray, looks: np.ndarray) -> None:
        """One frame: tags (K,) (> 0 = tagged) and its parts' looks (P, D) as part_looks gives; frames without a
        tag or a part say nothing of any class and are not kept."""
        pattern = self._pattern(tags)
        if not pattern.any() or len(looks) == 0:
            return
        key = pattern.tobytes()
        with self._lock:
            frames = [*self._frames.pop(key, []), np.asarray(looks, np.float32)]  # popped: now the newest pattern
            self._frames[key] = frames[-self.frames_per_pattern:]
            while len(self._frames) > self.max_patterns:
                self._frames.popitem(last=False)
            self._stacked = None

    def scores(self, tags: np.ndarray, looks: np.ndarray) -> np.ndarray:
        """(K, P) contrast of each part (looks (P, D)) for each class tagged in `tags` (K,): the mean over the other
        patterns that tag the class of how much a frame of theirs holds a look-alike (the best dot product, mean
        over the pattern's frames), minus the same for the pattern that does not tag it and holds the closest
        look-alike. NaN where the class is not tagged or no pattern on either side is held."""
        pattern = self._pattern(tags)
        out = np.full((self.num_classes, len(looks)), np.nan)
        stacked = self._stack()
        if stacked is None or len(looks) == 0:
            return out
        rows, frame_of_row, pattern_of_frame, presence = stacked
        similarity = np.asarray(looks, np.float32) @ rows.T  # (P, rows)
        starts = np.flatnonzero(np.r_[True, frame_of_row[1:] != frame_of_row[:-1]])
        best = np.maximum.reduceat(similarity, starts, axis=1)  # (P, frames): each frame's closest part
        frames_held = np.bincount(pattern_of_frame, minlength=len(presence))
        per_pattern = np.stack([np.bincount(pattern_of_frame, weights=b, minlength=len(presence)) for b in best]) \
            / frames_held  # (P, patterns)
        other = ~(presence == pattern).all(axis=1)
        for k in np.flatnonzero(pattern):
            tagging = other & presence[:, k]
            lacking = ~presence[:, k]
            if tagging.any() and lacking.any():
                out[k] = per_pattern[:, tagging].mean(axis=1) - per_pattern[:, lacking].max(axis=1)
        return out

    def _pattern(self, tags: np.ndarray) -> np.ndarray:
        pattern = np.asarray(tags).reshape(-1) > 0
        if pattern.shape != (self.num_classes,):
            raise ValueError(f"tags must be ({self.num_classes},), got shape {np.asarray(tags).shape}")
        return pattern

    def _stack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(rows (R, D), frame of each row (R,), pattern of each frame (F,), presence (Q, K) bool), cached."""
        with self._lock:
            if self._stacked is None and self._frames:
                rows: list[np.ndarray] = []
                frame_of_row: list[np.ndarray] = []
                pattern_of_frame: list[int] = []
                presence: list[np.ndarray] = []
                for q, (key, frames) in enumerate(self._frames.items()):
                    presence.append(np.frombuffer(key, bool))
                    for looks in frames:
                        frame_of_row.append(np.full(len(looks), len(pattern_of_frame)))
                        pattern_of_frame.append(q)
                        rows.append(looks)
                self._stacked = (np.concatenate(rows), np.concatenate(frame_of_row), np.array(pattern_of_frame),
                                 np.stack(presence))
            return self._stacked
