"""RealSense-like depth sensor model: what DEAL sees is noisy, quantised depth with holes on object boundaries."""

from __future__ import annotations

import cv2
import numpy as np

from deal_ros.lab.synthetic.frame import SURFACE_OBJECT0, SURFACE_STRUCTURE

_BASELINE_M = 0.05
"""Stereo baseline of the simulated depth camera (RealSense D435: 50 mm)."""


def depth_sensor(
    rng: np.random.Generator, z: np.ndarray, surf: np.ndarray, f: float, grid: np.ndarray
) -> np.ndarray:
    """RealSense-like depth from true depth z (H, W) metres: noise, quantisation and holes."""
    h, w = z.shape
    cols = np.arange(w, dtype=np.float64)[None, :]
    # Second imager to the right by the baseline: pixel u lands at u - f B / z there. A pixel is
    # occluded (stereo shadow, left of near objects) when a pixel to its right lands left of it.
    x2 = cols - f * _BASELINE_M / z
    right_min = np.minimum.accumulate(x2[:, ::-1], axis=1)[:, ::-1]
    shadow = np.zeros_like(z, bool)
    shadow[:, :-1] = x2[:, :-1] > right_min[:, 1:] + 0.1
    # Left border: outside the second imager's view (the depth FOV is a bit wider: margin).
    band = x2 < -rng.uniform(0.0, 12.0)

    # Edge dropout: short runs of holes on both sides of depth discontinuities.
    zc = np.pad(z, 1, mode="edge")
    jump = np.zeros_like(z)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        jump = np.maximum(jump, np.abs(zc[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] - z))
    edge = (jump > 0.03 * z).astype(np.uint8)
    edge = cv2.dilate(edge, np.ones((3, 3), np.uint8)).astype(bool)
    runs = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    dropout = edge & (runs > rng.uniform(0.55, 0.7))

    # Speckle: isolated invalid pixels, more at range.
    speckle = rng.random(z.shape) < rng.uniform(0.002, 0.006) * np.clip(z, 0.5, 5.0) ** 2

    # A few larger blobs (specular reflections, dark/absorbing spots), often on objects.
    blobs = np.zeros(z.shape, np.uint8)
    obj_pix = np.argwhere((surf >= SURFACE_OBJECT0) & (surf != SURFACE_STRUCTURE))
    for _ in range(int(rng.integers(0, 3))):
        if len(obj_pix) and rng.random() < 0.6:
            cy, cx = obj_pix[rng.integers(len(obj_pix))]
        else:
            cy, cx = rng.integers(0, h), rng.integers(0, w)
        axes = (int(rng.integers(2, 8)), int(rng.integers(2, 6)))
        cv2.ellipse(blobs, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, (1,), -1)

    sigma = rng.uniform(0.004, 0.008) * z**2  # ~1-2 mm at 0.5 m
    noisy = z + sigma * rng.standard_normal(z.shape)
    noisy = np.round(noisy * 1000.0) / 1000.0  # z16 in millimetres
    holes = shadow | band | dropout | speckle | blobs.astype(bool) | (noisy <= 0)
    return np.where(holes, 0.0, noisy).astype(np.float32)
