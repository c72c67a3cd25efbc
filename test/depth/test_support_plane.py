"""Support plane from depth: objects stay foreground, the table and the floor beyond it become background."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.config import PseudoLabelConfig
from deal_ros.depth.support_plane import fit_support_plane
from deal_ros.lab.synthetic import FAMILIES, make_closeup_scenes, make_family_scenes
from deal_ros.labels.pseudo_labels import fit_depth_prior


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


def _table_with(h: int = 60, w: int = 80) -> np.ndarray:
    """A tilted table at ~0.6 m; a keyboard-like slab (2 cm) along the top edge; a 6 cm box and a 10 cm bottle
    that reaches the bottom edge, both standing out of the table."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = 1.0 / (1.0 / 0.6 + 0.004 * (v - h / 2) + 0.001 * (u - w / 2))
    depth[0:10, 5:60] -= 0.02  # the slab reaches the frame's top edge
    depth[25:38, 30:45] -= 0.06  # a box in the middle
    depth[45:, 60:70] -= 0.10  # a tall object cut by the bottom edge
    return depth.astype(np.float32)


def test_flat_slabs_reaching_the_edge_join_the_table_objects_do_not() -> None:
    depth = torch.from_numpy(_table_with())[None, None]
    plain = fit_support_plane(depth)
    with_slabs = fit_support_plane(depth, slab_height=0.05)
    assert plain.in_front[0, 0, 2:8, 10:55].all()  # without slab_height the keyboard stands out
    background = with_slabs.background[0, 0]
    assert background[2:8, 10:55].all()
    assert not background[26:37, 31:44].any()  # the box rises 10 % of its distance: an object
    assert not background[47:, 61:69].any()  # reaches the edge, but far too tall for a slab
    assert torch.equal(with_slabs.behind, plain.behind)


def test_a_low_box_in_the_middle_is_no_slab() -> None:
    depth = _table_with()
    depth[28:34, 10:20] -= 0.015  # as flat as the keyboard but seen whole: a book, an object
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], slab_height=0.05)
    assert plane.in_front[0, 0, 29:33, 11:19].all()


def _tray(h: int = 96, w: int = 128) -> np.ndarray:
    """A table at ~0.7 m seen from above; a tray's four walls (7 cm) around a floor at table height, with a 6 cm
    box inside it and a taller one touching the inner side of the left wall."""
    depth = np.full((h, w), 0.7, np.float32)
    depth[15:80, 20:24] = depth[15:80, 100:104] = 0.63  # left and right walls
    depth[15:19, 20:104] = depth[76:80, 20:104] = 0.63  # far and near walls
    depth[40:55, 55:70] = 0.64  # a box in the middle
    depth[30:42, 24:34] = 0.60  # a box against the left wall, 3 cm taller: a depth step parts them (one of the
    # wall's height would merge with it: PART_JUMP)
    return depth


def test_the_walls_of_a_tray_are_background_the_objects_in_it_are_not() -> None:
    depth = torch.from_numpy(_tray())[None, None]
    plain = fit_support_plane(depth)
    plane = fit_support_plane(depth, walls=True)
    assert plain.in_front[0, 0, 20:70, 20:24].all()  # without walls=True a wall stands out like an object
    background = plane.background[0, 0]
    for wall in (np.s_[15:80, 20:24], np.s_[15:80, 100:104], np.s_[15:19, 20:104], np.s_[76:80, 20:104]):
        assert background[wall].float().mean() > 0.95
    assert plane.in_front[0, 0, 41:54, 56:69].all()
    assert plane.in_front[0, 0, 31:41, 25:33].all()


def test_a_box_as_tall_as_the_wall_it_leans_on_stays_an_object() -> None:
    depth = _tray()
    depth[30:42, 24:34] = 0.63  # the wall's height: no depth step parts it from the wall, one part holds both
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], walls=True)
    assert plane.background[0, 0, 45:80, 20:24].float().mean() > 0.95  # the wall below the box
    assert plane.in_front[0, 0, 33:40, 25:31].all()
    assert plane.in_front[0, 0, 30:42, 24:34].float().mean() > 0.8  # the disk that finds its body rounds its corners


def test_the_walls_of_a_small_tray_are_background() -> None:
    depth = np.full((96, 128), 0.7, np.float32)  # the tray covers 7 % of the frame, the floor in it 3 %
    depth[35:65, 50:54] = depth[35:65, 76:80] = depth[35:39, 50:80] = depth[61:65, 50:80] = 0.65
    depth[46:54, 61:69] = 0.66  # what it holds
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], walls=True)
    assert plane.background[0, 0, 35:65, 50:54].float().mean() > 0.95
    assert plane.in_front[0, 0, 47:53, 62:68].all()


def test_a_ring_lying_on_the_table_is_no_tray() -> None:
    yy, xx = np.mgrid[:96, :128]
    radius = np.hypot(yy - 48, xx - 64)
    depth = np.where((radius > 10) & (radius < 18), 0.68, 0.7).astype(np.float32)  # it encloses the table only
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], walls=True)
    assert plane.in_front[0, 0][(radius > 11) & (radius < 17)].all()


def test_objects_on_an_open_table_are_no_walls() -> None:
    depth = _tray()
    depth[76:80, 20:104] = 0.7  # no near wall: nothing encloses a floor
    depth[15:80, 100:104] = 0.7
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], walls=True)
    assert torch.equal(plane.in_front, fit_support_plane(torch.from_numpy(depth)[None, None]).in_front)


def _shelf_cell(h: int = 96, w: int = 128) -> np.ndarray:
    """A shelf cell from the front: the back wall at 1.0 m, the floor below it and the side walls coming towards
    the camera (planes: inverse depth affine in the pixels), a box standing on the floor in the middle."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    inv = np.full((h, w), 1.0)  # back wall
    floor = v > 60
    inv[floor] = 1.0 + 0.02 * (v[floor] - 60)
    left, right = u < 24, u > 104
    inv[left] = 1.0 + 0.02 * (24 - u[left])
    inv[right] = 1.0 + 0.02 * (u[right] - 104)
    depth = 1.0 / inv
    depth[45:68, 50:75] = 0.8  # the box, seen whole
    return depth.astype(np.float32)


def test_extra_planes_take_a_shelf_cells_walls_and_floor_and_keep_the_box() -> None:
    depth = torch.from_numpy(_shelf_cell())[None, None]
    one = fit_support_plane(depth)
    assert one.found.all() and one.in_front[0, 0, 70:, :20].float().mean() > 0.5  # the floor corner stands out
    plane = fit_support_plane(depth, extra_planes=4)
    background = plane.background[0, 0]
    for surface in (np.s_[:, :22], np.s_[:, 106:], np.s_[72:, 26:102], np.s_[5:40, 30:100]):
        assert background[surface].float().mean() > 0.9
    assert plane.in_front[0, 0, 47:66, 52:73].all() and plane.prior[0, 0, 47:66, 52:73].eq(1).all()


def test_a_large_object_face_seen_whole_is_no_extra_plane() -> None:
    depth = np.full((80, 100), 0.8, np.float32)  # a table seen from above
    depth[12:68, 15:85] = 0.6  # a box whose flat top covers half of the frame: much stands out, it is an object
    plane = fit_support_plane(torch.from_numpy(depth)[None, None], extra_planes=4)
    assert plane.in_front[0, 0, 14:66, 17:83].all()


def test_extra_planes_give_a_depth_cue_where_no_support_plane_is_found() -> None:
    h, w = 60, 120
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    strip = (u // 20).astype(int)  # six vertical strips, each its own surface (a folded screen): none holds 20 %
    inv = 1.0 / (0.8 + 0.15 * strip) * (1 + 0.15 * (strip % 2 * 2 - 1) * (v - 30) / 30)
    depth = (1.0 / inv).astype(np.float32)
    depth[20:40, 50:70] = 0.5  # an object held in front
    torch_depth = torch.from_numpy(depth)[None, None]
    assert not fit_support_plane(torch_depth).found.any()
    plane = fit_support_plane(torch_depth, extra_planes=5)
    assert plane.found.all()
    assert plane.prior[0, 0, 21:39, 51:69].eq(1).all()
    assert plane.background[0, 0, :, :20].float().mean() > 0.9  # the strip along the left side of the frame
    assert plane.background[0, 0].float().mean() > 0.25


def test_a_frames_surfaces_do_not_depend_on_its_batch() -> None:
    # Live frames come one at a time, offline ones in batches: a frame's prior must be the same either way.
    depth = torch.from_numpy(np.stack([frame.depth_m for family in FAMILIES
                                       for frame in make_family_scenes(family, 3, 64, 80, seed=3)]))[:, None]
    cfg = PseudoLabelConfig()
    batched = fit_depth_prior(depth, cfg).prior
    alone = torch.cat([fit_depth_prior(depth[i:i + 1], cfg).prior for i in range(len(depth))])
    assert torch.equal(batched, alone)
    assert torch.equal(fit_depth_prior(depth.flip(0), cfg).prior, batched.flip(0))
