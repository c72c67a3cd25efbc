"""Scene geometry: objects stand on a tilted table, the camera distance, the far background."""

from __future__ import annotations

import numpy as np

from deal_ros.lab.synthetic import (
    SURFACE_BACKGROUND,
    SURFACE_TABLE,
    SyntheticFrame,
)


def test_objects_consistent_with_depth(frames: list[SyntheticFrame]) -> None:
    """Objects stand on the table: nearer than the table/floor behind them, a few cm to ~15 cm tall."""
    for f in frames:
        assert f.depth_true_m is not None and f.surface is not None
        obj = f.gt_mask > 0
        assert np.array_equal(obj, f.surface >= 2)
        # An object occludes what is behind it: just above an object (image rows), the surface is farther.
        above = np.zeros_like(obj)
        above[:-1] = obj[1:] & ~obj[:-1]
        assert np.median(f.depth_true_m[above]) > np.median(f.depth_true_m[np.roll(above, 1, axis=0)]) - 0.01


def test_table_plane_has_depth_gradient(frames: list[SyntheticFrame]) -> None:
    for f in frames:
        z = f.depth_true_m[f.surface == SURFACE_TABLE]
        assert np.percentile(z, 95) - np.percentile(z, 5) > 0.1 * np.median(z)


def test_camera_distance_and_far_background(frames: list[SyntheticFrame]) -> None:
    seen = 0
    for f in frames:
        table = f.surface == SURFACE_TABLE
        centre = f.depth_true_m[f.depth_true_m.shape[0] // 2, f.depth_true_m.shape[1] // 2]
        assert 0.4 < centre < 1.6
        bg = f.surface == SURFACE_BACKGROUND
        if bg.mean() > 0.01:
            seen += 1
            assert np.median(f.depth_true_m[bg]) > 1.5 * np.median(f.depth_true_m[table])
            valid_bg = bg & (f.depth_m > 0)
            assert np.median(f.depth_m[valid_bg]) > 1.5
    assert seen >= len(frames) // 2  # the table's edge and the floor beyond are in view in many frames
