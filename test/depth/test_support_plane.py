"""Support plane from depth: objects stay foreground, the table and the floor beyond it become background."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.depth.support_plane import fit_support_plane
from deal_ros.lab.synthetic import make_closeup_scenes


@pytest.fixture(scope="module")
def scenes() -> list:
    return make_closeup_scenes(8, height=96, width=128, seed=7)


def test_objects_kept_table_and_floor_found(scenes: list) -> None:
    depth = torch.from_numpy(np.stack([f.depth_m for f in scenes]))[:, None]
    plane = fit_support_plane(depth)
    background = plane.background[:, 0].numpy()
    gt = np.stack([f.gt_mask for f in scenes])
    assert plane.found.all()
    assert background[gt > 0].mean() < 0.05  # objects stand out of the table
    valid_background = (gt == 0) & (depth[:, 0].numpy() > 0)
    assert background[valid_background].mean() > 0.8


def test_tilted_plane_without_intrinsics_and_box_on_it() -> None:
    # A tilted plane in camera coordinates: 1/z affine in pixels; a box 5 cm in front of it.
    h, w = 60, 80
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    inv = 1.0 / 0.6 + 0.004 * (v - h / 2) + 0.001 * (u - w / 2)
    depth = (1.0 / inv).astype(np.float32)
    depth[20:35, 30:50] -= 0.05
    depth[0:3] = 0.0  # holes are neither plane nor object
    plane = fit_support_plane(torch.from_numpy(depth)[None, None])
    background = plane.background[0, 0].numpy()
    assert not background[20:35, 30:50].any()
    assert background[40:, :].all()
    assert not background[0:3].any()


def test_scale_invariant_and_deterministic(scenes: list) -> None:
    depth = torch.from_numpy(scenes[0].depth_m)[None, None]
    a = fit_support_plane(depth).background
    assert torch.equal(a, fit_support_plane(depth).background)
    assert (a ^ fit_support_plane(depth * 1000.0).background).float().mean() < 0.002  # m vs mm


def test_no_valid_depth_finds_no_plane() -> None:
    for depth in (torch.zeros(1, 1, 32, 32), torch.full((1, 1, 32, 32), float("nan"))):
        plane = fit_support_plane(depth)
        assert not plane.found.any() and not plane.background.any()


def test_degenerate_valid_cells_do_not_fail() -> None:
    depth = torch.zeros(2, 1, 40, 40)
    depth[0, 0, 10, :] = 0.8  # one row of valid depth: a line fits any plane through it
    depth[1, 0, 5, 5] = 0.8  # a single valid pixel
    plane = fit_support_plane(depth)
    assert not plane.found.any()
    assert plane.prior.abs().sum() == 0
