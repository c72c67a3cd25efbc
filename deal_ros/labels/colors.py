"""Colour maps for label images (the overlay topic, the demo's figures, the label command), and writing PNGs.

Pictures go through deal_ros.storage.files' atomic writer like every other output: a full disk
leaves the previous file, never half a PNG.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deal_ros.storage.files import atomic_write

IGNORE_COLOUR = (255, 255, 255)


def palette(num_labels: int = 256) -> np.ndarray:
    """(num_labels, 3) uint8 colours, Pascal-VOC style (0 = black background), 255 = white (ignore)."""
    colours = np.zeros((num_labels, 3), dtype=np.uint8)
    for label in range(num_labels):
        value, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[label] = (r, g, b)
    if num_labels > 255:
        colours[255] = IGNORE_COLOUR
    return colours


_PALETTE = palette()


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W, 3) uint8 RGB."""
    return _PALETTE[labels]


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised labels over rgb (H, W, 3) uint8; background (0) stays untouched.

    uint8 cv2.addWeighted (about 10x faster than a float blend at 640x480; it rounds instead of truncating),
    so the segmenter node's overlay topic and the CLI's PNGs share one implementation.
    """
    blended = cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, colorize(labels), alpha, 0.0)
    np.copyto(blended, rgb, where=(labels == 0)[..., None])
    return blended


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """An (H, W, 3) uint8 RGB image as PNG, atomically; cv2.imwrite's failure (it returns False) is an OSError."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise OSError(f"cannot write {path} (disk full or not writable?)")

    atomic_write(path, write, suffix=".png")
