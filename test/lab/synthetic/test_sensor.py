"""The depth sensor model: hole fraction, stereo shadow, left invalid band, noise growing with range."""

from __future__ import annotations

import numpy as np

from deal_ros.lab.synthetic import (
    SURFACE_TABLE,
    SyntheticFrame,
)


def test_hole_fraction_realistic(frames: list[SyntheticFrame]) -> None:
    fractions = np.array([(f.depth_m == 0).mean() for f in frames])
    assert 0.03 <= fractions.mean() <= 0.15
    assert (fractions > 0.005).all() and (fractions < 0.3).all()


def test_stereo_shadow_on_left_of_objects(frames: list[SyntheticFrame]) -> None:
    """Holes cluster just left of objects (RealSense aligned to colour), not just right of them."""
    left_holes = right_holes = left_n = right_n = 0
    for f in frames:
        obj = f.gt_mask > 0
        hole = f.depth_m == 0
        left_band = np.zeros_like(obj)
        right_band = np.zeros_like(obj)
        for s in range(1, 4):
            left_band[:, :-s] |= obj[:, s:]  # an object pixel s columns to the right
            right_band[:, s:] |= obj[:, :-s]
        left_band &= ~obj
        right_band &= ~obj
        left_band[:, :30] = False  # keep the left border's invalid band out of it
        right_band[:, :30] = False
        left_holes += int((hole & left_band).sum())
        right_holes += int((hole & right_band).sum())
        left_n += int(left_band.sum())
        right_n += int(right_band.sum())
    assert left_holes / left_n > 0.2
    assert left_holes / left_n > 1.8 * right_holes / right_n


def test_invalid_band_on_left_border(frames: list[SyntheticFrame]) -> None:
    left = np.mean([(f.depth_m[:, :3] == 0).mean() for f in frames])
    right = np.mean([(f.depth_m[:, -3:] == 0).mean() for f in frames])
    assert left > 0.5 and right < 0.2


def test_depth_noise_grows_with_range(frames: list[SyntheticFrame]) -> None:
    for f in frames:
        assert f.depth_true_m is not None
        ok = (f.depth_m > 0) & (f.surface == SURFACE_TABLE)
        z = f.depth_true_m[ok]
        err = f.depth_m[ok] - z
        assert np.abs(err).max() > 0  # noisy
        k = np.std(err / z**2)
        assert 0.002 < k < 0.012  # ~1-2 mm at 0.5 m
