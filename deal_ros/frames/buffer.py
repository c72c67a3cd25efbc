"""A bounded, thread-safe frame buffer for online training, with class-balanced sampling.

Frames are stored at training resolution as uint8 RGB and float32 depth in metres (0 = hole), about
7 bytes a pixel: 500 frames of 240x320 take ~270 MB. Depth is kept as given (not quantised to uint16
millimetres, which turned depth beyond 65.5 m or below 0.5 mm into holes); only NaN and inf, which mean
no measurement, become 0. When full, the oldest frame of the most
represented class is evicted, so a class seen once early is not pushed out by a stream of another.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from deal_ros.config import BufferConfig
from deal_ros.errors import FrameError
from deal_ros.frames.checks import check_rgb

_EMPTY = -1  # bucket of frames without any tag (background-only negatives)


@dataclass
class StoredFrame:
    rgb: np.ndarray
    """(H, W, 3) uint8 RGB at training resolution."""
    depth_m: np.ndarray
    """(H, W) float32 metres, 0 = hole."""
    tags: np.ndarray
    """(K,) uint8 multi-hot."""

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + self.depth_m.nbytes + self.tags.nbytes

    def buckets(self) -> list[int]:
        present = np.flatnonzero(self.tags).tolist()
        return present or [_EMPTY]


def resize_frame(rgb: np.ndarray, depth_m: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize RGB (area / linear) and depth (nearest, so holes never blend with valid depth) to size=(H, W)."""
    height, width = size
    if rgb.shape[:2] != (height, width):
        shrink = rgb.shape[0] > height
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if depth_m.shape[:2] != (height, width):
        depth_m = cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth_m


class FrameBuffer:
    """Holds at most `max_frames` frames and `max_bytes` bytes; `sample` is class-balanced if configured."""

    def __init__(self, cfg: BufferConfig, num_classes: int, size: tuple[int, int]) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.size = size
        self._frames: list[StoredFrame] = []
        self._lock = threading.Lock()  # held for list operations only, never across a wait: no deadline needed

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(f.nbytes for f in self._frames)

    def class_counts(self) -> np.ndarray:
        """(K,) number of stored frames tagged with each class."""
        with self._lock:
            if not self._frames:
                return np.zeros(self.num_classes, dtype=np.int64)
            return np.sum([f.tags for f in self._frames], axis=0).astype(np.int64)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def add(self, rgb: np.ndarray, depth_m: np.ndarray, tags: np.ndarray) -> None:
        """Store a frame: rgb (H, W, 3) uint8, depth_m (H, W) metres (0/NaN = hole), tags (K,) 0/1."""
        check_rgb(rgb)
        if depth_m.ndim != 2:
            raise FrameError(f"depth_m must be (H, W), got {depth_m.shape}")
        if tags.shape != (self.num_classes,):
            raise FrameError(f"tags must have shape ({self.num_classes},), got {tags.shape}")
        rgb, depth_m = resize_frame(rgb, depth_m, self.size)
        depth = np.nan_to_num(depth_m.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        frame = StoredFrame(np.ascontiguousarray(rgb), depth, (np.asarray(tags) > 0).astype(np.uint8))
        with self._lock:
            self._frames.append(frame)
            self._evict()

    def _evict(self) -> None:
        total = sum(f.nbytes for f in self._frames)
        while len(self._frames) > 1 and (len(self._frames) > self.cfg.max_frames or total > self.cfg.max_bytes):
            counts = Counter(b for f in self._frames for b in f.buckets())
            crowded = max(counts, key=lambda b: counts[b])
            victim = next(i for i, f in enumerate(self._frames) if crowded in f.buckets())
            total -= self._frames.pop(victim).nbytes

    def sample(self, batch_size: int, rng: np.random.Generator) -> list[StoredFrame]:
        """Draw `batch_size` frames (with replacement); balanced over classes (and untagged frames)."""
        with self._lock:
            frames = list(self._frames)
        if not frames:
            raise RuntimeError("the frame buffer is empty")
        if not self.cfg.class_balanced:
            return [frames[i] for i in rng.integers(0, len(frames), size=batch_size)]
        by_bucket: dict[int, list[int]] = {}
        for index, frame in enumerate(frames):
            for bucket in frame.buckets():
                by_bucket.setdefault(bucket, []).append(index)
        buckets = sorted(by_bucket)
        picks = []
        for bucket in rng.choice(buckets, size=batch_size):
            members = by_bucket[int(bucket)]
            picks.append(frames[members[rng.integers(0, len(members))]])
        return picks
