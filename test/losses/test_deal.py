"""DEAL (method.md §2): one test per listed property, for both presets, plus an independent reference.

Presets: ``DEALLoss.from_preset("paper")`` (Sobel of metric depth / image maximum) and
``DEALLoss.from_preset("robust")`` (the default: plane-free Sobel of log-depth, fixed threshold).

Design facts checked here rather than "fixed":
- robust uses log-depth, so it is invariant to the depth unit and sign but NOT to a depth offset (it
  detects relative jumps); offset invariance is tested on ``paper`` and on ``robust`` with
  ``log_depth=False, edge_norm="percentile"``.
- the default hole fill ``row_far`` works along rows (the stereo baseline), so 90-degree rotation
  equivariance holds exactly only on hole-free depth or with ``hole_fill="far"``; flips hold always.

The reference implementation at the bottom is written from method.md §2 steps 1-6 only (it imports
nothing from deal_ros; F.interpolate is used for resampling only).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deal_ros.config import DealLossConfig
from deal_ros.depth.maps import depth_edge_map, fill_holes
from deal_ros.losses.deal import DEAL_PRESETS, DEALLoss, cam_edge_map, deal_loss, soft_binarize

PRESETS = ("paper", "robust")
EDGE = 1.0 / (1.0 + math.exp(2.5))  # sigmoid(-mu): the edge / non-edge line of a, 0.0759
DEPTH_KEYS = ("edge_operator", "log_depth", "edge_norm", "edge_threshold", "edge_percentile",
              "plane_window", "hole_fill", "hole_exclude_window", "mu")



pytestmark = pytest.mark.usefixtures("one_thread")


def loss_fn(preset: str, **overrides) -> DEALLoss:
    return DEALLoss.from_preset(preset, **overrides)


def edge_map(preset: str, depth: torch.Tensor, size: tuple[int, int], **overrides):
    opts = loss_fn(preset, **overrides).options
    return depth_edge_map(depth, size, **{k: opts[k] for k in DEPTH_KEYS})


def scene(size: int = 64, box_jump: float = 0.1, tilt_r: float = 0.0005, tilt_c: float = 0.0002,
          box: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tilted table (metres) with a box standing on it; returns depth (1, 1, S, S) and the box mask (S, S)."""
    r = torch.arange(size, dtype=torch.float32)[:, None].expand(size, size)
    c = torch.arange(size, dtype=torch.float32)[None, :].expand(size, size)
    default = (size // 4, size // 2 + size // 8, size // 4 + 4, 3 * size // 4)
    r0, r1, c0, c1 = box if box is not None else default
    inside = (r >= r0) & (r < r1) & (c >= c0) & (c < c1)
    z = 0.8 + tilt_r * r + tilt_c * c
    return torch.where(inside, z - box_jump, z)[None, None].clone(), inside


def random_depth(gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """Smooth random depth (0.5-2 m) with a few random boxes: plenty of edges of all strengths."""
    base = F.interpolate(torch.rand(b, 1, 4, 4, generator=gen), size=(h, w), mode="bilinear",
                         align_corners=False)
    z = 0.6 + base
    for _ in range(3):
        r0, c0 = (int(v) for v in torch.randint(0, h // 2, (2,), generator=gen))
        z[:, :, r0:r0 + h // 3, c0:c0 + w // 3] -= 0.2 * torch.rand(b, 1, 1, 1, generator=gen)
    return z + 0.01 * torch.rand(b, 1, h, w, generator=gen)


def random_inputs(seed: int, b: int = 2, k: int = 3, size: int = 64, cam_size: int = 16):
    gen = torch.Generator().manual_seed(seed)
    cam = torch.randn(b, k, cam_size, cam_size, generator=gen)
    depth = random_depth(gen, b, size, size)
    tags = (torch.rand(b, k, generator=gen) > 0.4).float()
    tags[0, 0] = 1.0
    return cam, depth, tags


# --------------------------------------------------------------------------------------------------
# f: the soft binarisation
# --------------------------------------------------------------------------------------------------

def test_soft_binarize_values_monotonic_and_finite_derivative():
    a = torch.linspace(0.0, 1.0, 20001, dtype=torch.float64, requires_grad=True)
    f = soft_binarize(a)
    assert f[0].item() == -1.0 and f[-1].item() == 1.0
    assert abs(soft_binarize(torch.tensor(0.0759, dtype=torch.float64)).item()) < 1e-3
    for mu in (1.0, 2.5, 4.0):  # zero exactly at sigmoid(-mu)
        edge = torch.sigmoid(torch.tensor(-mu, dtype=torch.float64))
        assert abs(soft_binarize(edge, mu).item()) < 1e-12
    assert bool((f[1:] > f[:-1]).all()), "f must be strictly increasing on [0, 1]"
    (grad,) = torch.autograd.grad(f.sum(), a)
    assert bool(torch.isfinite(grad).all()) and bool((grad >= 0).all())
    # the rational form equals tanh(mu + logit(a)) inside (0, 1)
    inner = a.detach()[1:-1]
    assert torch.allclose(soft_binarize(inner), torch.tanh(2.5 + torch.log(inner / (1 - inner))), atol=1e-12)
    # float32 as used in training: endpoints exact, derivative finite
    a32 = torch.linspace(0.0, 1.0, 4097, requires_grad=True)
    (g32,) = torch.autograd.grad(soft_binarize(a32).sum(), a32)
    assert bool(torch.isfinite(g32).all())
    assert soft_binarize(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# invariances and equivariances
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_invariant_to_depth_scale_m_vs_mm(preset):
    cam, depth, tags = random_inputs(1)
    fn = loss_fn(preset)
    ref = fn(cam, depth, tags)
    for scale in (1000.0, 1e-3, 7.3):
        torch.testing.assert_close(fn(cam, depth * scale, tags), ref, atol=2e-6, rtol=0)
    # with holes as well (row_far fill and the exclusion mask are scale-free)
    holey = depth.clone()
    holey[:, :, 20:24, 5:12] = 0.0
    torch.testing.assert_close(fn(cam, holey * 1000.0, tags), fn(cam, holey, tags), atol=2e-6, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_invariant_to_depth_sign(preset):
    cam, depth, tags = random_inputs(2)
    depth[:, :, 10:14, 30:40] = float("nan")
    fn = loss_fn(preset)
    assert fn(cam, -depth, tags).item() == pytest.approx(fn(cam, depth, tags).item(), abs=1e-7)


@pytest.mark.parametrize(("preset", "overrides"), [
    ("paper", {}),
    ("robust", {"log_depth": False, "edge_norm": "percentile"}),
])
def test_invariant_to_depth_offset(preset, overrides):
    """Offset invariance holds for metric-depth edge maps with a scale-free normalisation."""
    cam, depth, tags = random_inputs(3)
    depth[:, :, 40:44, 8:20] = 0.0  # a hole: the fill compares magnitudes, unchanged by a positive offset
    fn = loss_fn(preset, **overrides)
    ref = fn(cam, depth, tags)
    shifted = torch.where(depth > 0, depth + 0.75, depth)
    torch.testing.assert_close(fn(cam, shifted, tags), ref, atol=1e-5, rtol=0)


def test_robust_log_depth_is_not_offset_invariant_by_design():
    """log-depth detects *relative* jumps: the same metric jump farther away is a weaker edge (by design).

    A box 3 t (relative) tall at 0.8 m is an edge; moved 5 m farther it is below t and no edge.
    """
    t = DEAL_PRESETS["robust"]["edge_threshold"]
    depth, box = scene(64, box_jump=3 * t * 0.8)
    cam = box.float()[None, None]
    tags = torch.ones(1, 1)
    fn = loss_fn("robust")
    a_near, _ = edge_map("robust", depth, (16, 16))
    a_far, _ = edge_map("robust", depth + 5.0, (16, 16))
    assert float(a_near.max()) > EDGE > float(a_far.max())
    assert abs(fn(cam, depth + 5.0, tags).item() - fn(cam, depth, tags).item()) > 0.05


@pytest.mark.parametrize("preset", PRESETS)
def test_invariant_to_positive_cam_scale(preset):
    cam, depth, tags = random_inputs(4)
    fn = loss_fn(preset)
    ref = fn(cam, depth, tags)
    for scale in (1e-2, 3.0, 250.0):
        torch.testing.assert_close(fn(cam * scale, depth, tags), ref, atol=2e-6, rtol=0)


def _holey(depth: torch.Tensor) -> torch.Tensor:
    """Small holes (filled along rows) plus a big one (> max_gap: pyramid fill and exclusion)."""
    out = depth.clone()
    out[:, :, 10:13, 30:36] = 0.0
    out[:, :, 33:35, 2:5] = float("nan")
    out[:, :, 40:60, 8:50] = 0.0
    return out


_FLIPS = {
    "flip_w": lambda x: x.flip(-1),
    "flip_h": lambda x: x.flip(-2),
    "flip_hw": lambda x: x.flip(-1, -2),
}
_ROTS = {f"rot{90 * k}": (lambda x, k=k: torch.rot90(x, k, dims=(-2, -1))) for k in (1, 2, 3)}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("holes", [False, True], ids=["hole_free", "holes"])
@pytest.mark.parametrize("size", [64, 60])  # 60: the pyramid fill's levels have odd sizes
@pytest.mark.parametrize("name", list(_FLIPS))
def test_equivariant_to_joint_flips(preset, holes, size, name):
    cam, depth, tags = random_inputs(5, b=2, k=3, size=size, cam_size=size // 4)
    if holes:
        depth = _holey(depth)
    t = _FLIPS[name]
    fn = loss_fn(preset, grid_stride=4)
    torch.testing.assert_close(fn(t(cam), t(depth), tags), fn(cam, depth, tags), atol=2e-6, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("holes", "hole_fill"), [(False, "row_far"), (True, "far")],
                         ids=["hole_free", "holes_far"])
@pytest.mark.parametrize("size", [64, 60])
@pytest.mark.parametrize("name", list(_ROTS))
def test_equivariant_to_joint_rotations(preset, holes, hole_fill, size, name):
    cam, depth, tags = random_inputs(6, b=2, k=3, size=size, cam_size=size // 4)
    if holes:
        depth = _holey(depth)
    t = _ROTS[name]
    fn = loss_fn(preset, grid_stride=4, hole_fill=hole_fill)
    torch.testing.assert_close(fn(t(cam), t(depth), tags), fn(cam, depth, tags), atol=2e-6, rtol=0)


def test_row_far_fill_is_row_directional_by_design():
    """A hole spanning a jump is filled from the row's far side: after a 90-degree turn the fill differs."""
    depth, _ = scene(64, box_jump=0.1)
    depth[:, :, 14:34, 18:22] = 0.0  # straddles the box's left border (stereo shadow)
    valid = depth != 0
    rot = torch.rot90(fill_holes(depth, valid, "row_far"), 1, dims=(-2, -1))
    turned = fill_holes(torch.rot90(depth, 1, dims=(-2, -1)), torch.rot90(valid, 1, dims=(-2, -1)), "row_far")
    assert not torch.allclose(rot, turned)
    far_rot = torch.rot90(fill_holes(depth, valid, "far"), 1, dims=(-2, -1))
    far_turned = fill_holes(torch.rot90(depth, 1, dims=(-2, -1)), torch.rot90(valid, 1, dims=(-2, -1)), "far")
    torch.testing.assert_close(far_rot, far_turned, atol=0, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_permuting_classes_with_tags_changes_nothing(preset):
    cam, depth, tags = random_inputs(7, b=3, k=5)
    fn = loss_fn(preset)
    ref = fn(cam, depth, tags)
    for seed in range(3):
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fn(cam[:, perm], depth, tags[:, perm]), ref, atol=1e-6, rtol=0)
    # permuting the CAMs alone (tags fixed) does change it: the test is not vacuous
    perm = torch.tensor([1, 2, 3, 4, 0])
    assert abs(fn(cam[:, perm], depth, tags).item() - ref.item()) > 1e-4


# --------------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_untagged_classes_get_exactly_zero_gradient(preset, device):
    cam, depth, _ = random_inputs(8, b=3, k=4)
    tags = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    cam = cam.to(device).requires_grad_(True)
    loss = loss_fn(preset)(cam, depth.to(device), tags.to(device))
    loss.backward()
    grad = cam.grad.cpu()
    untagged = ~tags.bool()
    assert bool((grad[untagged] == 0).all()), "untagged classes must get exactly zero gradient"
    assert all(bool((grad[b, k] != 0).any()) for b, k in tags.nonzero().tolist())


@pytest.mark.parametrize("preset", PRESETS)
def test_depth_never_receives_gradient(preset, device):
    cam, depth, tags = random_inputs(9)
    cam = cam.to(device).requires_grad_(True)
    depth = depth.to(device).requires_grad_(True)
    loss = loss_fn(preset)(cam, depth, tags.to(device))
    (g_depth,) = torch.autograd.grad(loss, depth, retain_graph=True, allow_unused=True)
    assert g_depth is None
    loss.backward()
    assert depth.grad is None
    assert cam.grad is not None


# --------------------------------------------------------------------------------------------------
# degenerate inputs: no NaN / Inf
# --------------------------------------------------------------------------------------------------

def _degenerate_cases():
    gen = torch.Generator().manual_seed(10)
    cam = torch.randn(2, 3, 16, 16, generator=gen)
    depth = random_depth(gen, 2, 64, 64)
    holes = depth.clone()
    holes[:, :, ::5, ::3] = 0.0
    holes[:, :, 20:40, 20:40] = float("nan")
    holes[:, :, 0:8] = 0.0
    yield "constant_cam_zero", torch.zeros_like(cam), depth
    yield "constant_cam_one", torch.ones_like(cam), depth
    yield "constant_cam_negative", torch.full_like(cam, -3.0), depth
    yield "constant_cam_large", torch.full_like(cam, 1e4), depth
    yield "constant_depth", cam, torch.full_like(depth, 1.3)
    yield "all_zero_depth", cam, torch.zeros_like(depth)
    yield "all_nan_depth", cam, torch.full_like(depth, float("nan"))
    yield "inf_depth", cam, torch.where(depth > 1.0, torch.full_like(depth, float("inf")), depth)
    yield "holes", cam, holes
    yield "constant_cam_and_depth", torch.zeros_like(cam), torch.full_like(depth, 2.0)


@pytest.mark.parametrize("preset", PRESETS)
def test_no_nan_or_inf_for_degenerate_inputs(preset, device):
    tags = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], device=device)
    fn = loss_fn(preset)
    for name, cam0, depth in _degenerate_cases():
        cam = cam0.to(device).clone().requires_grad_(True)
        loss = fn(cam, depth.to(device), tags)
        loss.backward()
        assert bool(torch.isfinite(loss)), name
        assert -1.0 - 1e-6 <= loss.item() <= 1.0 + 1e-6, name
        assert bool(torch.isfinite(cam.grad).all()), name
        if name in ("all_zero_depth", "all_nan_depth"):  # nothing valid: skipped, loss exactly 0
            assert loss.item() == 0.0 and bool((cam.grad == 0).all()), name


@pytest.mark.parametrize("preset", PRESETS)
def test_batch_without_tags_returns_exact_zero(preset, device):
    cam, depth, _ = random_inputs(11, b=3, k=4)
    cam = cam.to(device).requires_grad_(True)
    loss = loss_fn(preset)(cam, depth.to(device), torch.zeros(3, 4, device=device))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert loss.requires_grad
    loss.backward()
    assert bool((cam.grad == 0).all())


@pytest.mark.parametrize("preset", PRESETS)
def test_images_without_tags_are_skipped(preset):
    cam, depth, tags = random_inputs(12, b=3, k=4)
    tags[1] = 0.0
    tags[0] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    tags[2] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    fn = loss_fn(preset)
    keep = [0, 2]
    expected = fn(cam[keep], depth[keep], tags[keep])
    torch.testing.assert_close(fn(cam, depth, tags), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_cell_mask_counts_only_its_cells(preset):
    """loss.deal.region: a mask of every pixel is the plain loss; only the masked cells carry gradient; an image
    whose mask is empty is skipped like an image without tags."""
    cam, depth, tags = random_inputs(14, b=2, k=3)
    fn = loss_fn(preset)
    everywhere = torch.ones_like(depth, dtype=torch.bool)
    torch.testing.assert_close(fn(cam, depth, tags, everywhere), fn(cam, depth, tags), atol=1e-6, rtol=0)
    nothing_in_second = everywhere.clone()
    nothing_in_second[1] = False
    torch.testing.assert_close(fn(cam, depth, tags, nothing_in_second), fn(cam[:1], depth[:1], tags[:1]),
                               atol=1e-6, rtol=0)
    left = everywhere.clone()
    left[..., 32:] = False  # the left half of the 64-pixel depth: loss cells 0-7 of 16
    cam = cam.clone().requires_grad_(True)
    fn(cam, depth, tags, left).backward()
    assert cam.grad is not None and bool((cam.grad[..., :4] != 0).any())
    assert bool((cam.grad[..., 12:] == 0).all())  # a CAM cell far from the masked cells gets no gradient
    with pytest.raises(ValueError, match="cell_mask"):
        fn(cam, depth, tags, left[..., :32])


# --------------------------------------------------------------------------------------------------
# holes
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_hole_inside_flat_region_creates_no_edge(preset):
    """A hole inside a region that is flat along the row (the fill direction) leaves the loss unchanged."""
    depth, _ = scene(64, box_jump=0.1, tilt_r=0.002, tilt_c=0.0)  # steep along the columns only
    gen = torch.Generator().manual_seed(13)
    cam = torch.randn(1, 2, 16, 16, generator=gen)
    tags = torch.ones(1, 2)
    fn = loss_fn(preset)
    ref = fn(cam, depth, tags)
    holey = depth.clone()
    holey[:, :, 50:57, 6:16] = 0.0  # 7 x 10 px in the table, far from the box
    holey[:, :, 4:6, 40:44] = float("nan")
    torch.testing.assert_close(fn(cam, holey, tags), ref, atol=1e-6, rtol=0)
    a_ref, _ = edge_map(preset, depth, (16, 16))
    a_hole, v_hole = edge_map(preset, holey, (16, 16))
    assert bool(v_hole.all()), "small holes must not be excluded"
    torch.testing.assert_close(a_hole, a_ref, atol=1e-6, rtol=0)
    # on a plane tilted along the row as well the far-side fill leaves a tiny step: still no edge
    tilted, _ = scene(64, box_jump=0.1, tilt_r=0.002, tilt_c=0.0005)  # 10 px hole: a 0.5 % step
    tilted_holey = torch.where(holey == holey, tilted, holey)  # same holes (NaN stays NaN)
    tilted_holey[:, :, 50:57, 6:16] = 0.0
    a_t, _ = edge_map(preset, tilted, (16, 16))
    a_th, _ = edge_map(preset, tilted_holey, (16, 16))
    hole_cells = torch.zeros(16, 16, dtype=torch.bool)
    hole_cells[11:16, 0:5] = True
    flat_ref = a_t[0, 0][hole_cells] <= EDGE
    assert bool((a_th[0, 0][hole_cells][flat_ref] <= EDGE).all())
    assert abs(fn(cam, tilted_holey, tags).item() - fn(cam, tilted, tags).item()) < 5e-3


@pytest.mark.parametrize("preset", PRESETS)
def test_hole_on_object_border_keeps_the_edge(preset):
    """Stereo shadow: a hole left of the box's border (plus 2 px of the box) is filled from the far side."""
    depth, box = scene(64, box_jump=0.1)
    r0, c0 = 16, 20  # the box's top row and left column (scene defaults for size 64)
    holey = depth.clone()
    holey[:, :, r0:40, c0 - 8:c0 + 2] = 0.0
    size = (16, 16)
    a_ref, _ = edge_map(preset, depth, size)
    a_hole, v_hole = edge_map(preset, holey, size)
    border = (slice(5, 9), slice(c0 // 4 - 1, c0 // 4 + 1))  # the left border's cells in the shadow rows
    assert bool((a_ref[0, 0][border].amax(dim=1) > EDGE).all())
    assert bool(v_hole[0, 0][border].all()), "border cells must stay valid"
    assert bool((a_hole[0, 0][border].amax(dim=1) > EDGE).all()), "the border must stay an edge"
    # the strict policy (exclude everything near a hole) loses exactly these cells: the failure mode avoided
    _, v_none = edge_map(preset, holey, size, hole_fill="none")
    assert not bool(v_none[0, 0][border].any())
    # the loss moves a little (the 2 px of the box inside the shadow become background) and the
    # CAM that follows the box still beats a shifted one by a clear margin
    cam = box.float()[None, None]
    tags = torch.ones(1, 1)
    fn = loss_fn(preset)
    with_hole = fn(cam, holey, tags).item()
    assert abs(with_hole - fn(cam, depth, tags).item()) < 0.05
    assert with_hole < fn(torch.roll(cam, 4, dims=-1), holey, tags).item() - 0.02


@pytest.mark.parametrize("preset", PRESETS)
def test_large_hole_region_is_excluded(preset):
    """Cells deep inside a big hole are invalid, and whatever the CAM does there does not count.

    Design: the depth has a 64 x 64 px hole (16 x 16 cells). The CAM is given on the loss grid and has
    a sharp 0/1 step elsewhere (it fixes the CAM's min, max and edge maximum); inside the excluded
    region, two cells away from any valid cell's Sobel footprint, it is replaced by arbitrary values
    in (0.2, 0.8). The loss must not move (on hole-free depth the same change does move it), and it
    must equal the average of the per-cell agreement over valid cells only.
    """
    size = 128
    depth, box = scene(size, box_jump=0.1, box=(8, 24, 8, 120))
    holey = depth.clone()
    holey[:, :, 40:104, 40:104] = 0.0
    grid = (32, 32)
    fn = loss_fn(preset, grid_stride=4)
    a, valid = edge_map(preset, holey, grid)
    assert not bool(valid[0, 0, 12:22, 12:22].any()), "deep inside the big hole must be invalid"
    assert bool(valid[0, 0, :8].all()) and bool(valid[0, 0, :, :8].all())
    assert 0.05 < 1.0 - valid.float().mean().item() < 0.15

    cam = F.interpolate(box.float()[None, None], size=grid, mode="area")
    other = cam.clone()
    gen = torch.Generator().manual_seed(14)
    other[:, :, 14:20, 14:20] = 0.2 + 0.6 * torch.rand(1, 1, 6, 6, generator=gen)
    tags = torch.ones(1, 1)
    l_hole = fn(cam, holey, tags)
    torch.testing.assert_close(fn(other, holey, tags), l_hole, atol=1e-6, rtol=0)
    assert abs(fn(other, depth, tags).item() - fn(cam, depth, tags).item()) > 1e-3

    agreement = soft_binarize(cam_edge_map(cam)) * soft_binarize(a)
    expected = -agreement[valid].mean()
    torch.testing.assert_close(l_hole, expected, atol=1e-6, rtol=0)
    assert abs(l_hole.item() - (-agreement.mean().item())) > 1e-3


# --------------------------------------------------------------------------------------------------
# alignment: the loss prefers CAMs whose edges sit on depth edges
# --------------------------------------------------------------------------------------------------

def _box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


@pytest.mark.parametrize("layout_kind", ["box_mask", "depth_map"])
@pytest.mark.parametrize("preset", PRESETS)
def test_aligned_cam_scores_lower_than_shifted_or_blurred(preset, layout_kind):
    """The CAM equals the depth layout: the box's mask, or the (inverted) depth itself on the loss grid.

    The table is only mildly tilted: on a steep table the paper's map marks the whole plane as edge
    (method.md's observation, see test_depth.py), and then a blurred CAM can score as well.
    """
    depth, box = scene(128, box_jump=0.1)
    grid = (32, 32)
    if layout_kind == "box_mask":
        layout = F.interpolate(box.float()[None, None], size=grid, mode="area")
    else:
        grid_depth = F.interpolate(depth, size=grid, mode="bicubic", antialias=True, align_corners=False)
        layout = 2.0 - grid_depth
    fn = loss_fn(preset, grid_stride=4)
    tags = torch.ones(1, 1)
    aligned = fn(layout, depth, tags).item()
    margins = []
    for shift in (1, 2, 4):
        for dims in ((-1,), (-2,), (-2, -1)):
            shifted = torch.roll(layout, shifts=(shift,) * len(dims), dims=dims)
            margins.append(fn(shifted, depth, tags).item() - aligned)
    for k in (3, 5, 9):
        # the paper's map has wider edge bands (bicubic + max normalisation), so a 3x3 blur of the
        # box mask comes close there (margin ~0.006); it must still score worse
        margins.append(fn(_box_blur(layout, k), depth, tags).item() - aligned)
    assert min(margins) > 1e-3, margins
    assert sum(margins) / len(margins) > 0.05, margins


@pytest.mark.parametrize("preset", PRESETS)
def test_gradient_descent_on_cam_lowers_the_loss(preset):
    depth, _ = scene(64, box_jump=0.1)
    gen = torch.Generator().manual_seed(15)
    cam = torch.randn(1, 2, 16, 16, generator=gen).requires_grad_(True)
    tags = torch.ones(1, 2)
    fn = loss_fn(preset)
    opt = torch.optim.Adam([cam], lr=0.05)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = fn(cam, depth, tags)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = fn(cam.detach(), depth, tags).item()
    assert all(math.isfinite(v) for v in losses)
    assert final < losses[0] - 0.1, (losses[0], final)


# --------------------------------------------------------------------------------------------------
# mixed precision, devices, validation
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "dtype"), [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param("cuda", torch.float16, id="cuda-fp16",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")),
])
@pytest.mark.parametrize("preset", PRESETS)
def test_autocast_gives_finite_fp32_close_to_fp32(preset, device, dtype):
    torch.manual_seed(16)
    head = torch.nn.Conv2d(8, 3, 1, bias=False).to(device)
    feats = torch.randn(2, 8, 16, 16, device=device)
    depth = random_depth(torch.Generator().manual_seed(16), 2, 64, 64).to(device)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], device=device)
    fn = loss_fn(preset)
    ref = fn(head(feats), depth, tags)
    with torch.autocast(device_type=device, dtype=dtype):
        cam = head(feats)
        assert cam.dtype == dtype
        loss = fn(cam, depth, tags)
    assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))
    assert abs(loss.item() - ref.item()) < 2e-2
    # the only difference is the rounding of the CAM: the loss itself runs in fp32
    torch.testing.assert_close(loss, fn(cam.float(), depth, tags), atol=1e-6, rtol=0)
    loss.backward()
    assert bool(torch.isfinite(head.weight.grad).all())


@pytest.mark.parametrize("preset", PRESETS)
def test_device_agnostic(preset, device):
    cam, depth, tags = random_inputs(17)
    ref = loss_fn(preset)(cam, depth, tags)
    out = loss_fn(preset)(cam.to(device), depth.to(device), tags.to(device))
    assert out.device.type == device.type
    assert out.item() == pytest.approx(ref.item(), abs=1e-5)
    # depth on the CPU with the CAM on the device is accepted as well
    mixed = loss_fn(preset)(cam.to(device), depth, tags.to(device))
    assert mixed.item() == pytest.approx(ref.item(), abs=1e-5)


def test_input_validation_messages():
    cam, depth, tags = random_inputs(18, b=2, k=3)
    with pytest.raises(ValueError, match=r"cam_logits must be a \(B, K, h, w\)"):
        deal_loss(cam[0], depth, tags)
    with pytest.raises(ValueError, match=r"depth_m must be a \(B, 1, H, W\)"):
        deal_loss(cam, depth[:, 0], tags)
    with pytest.raises(ValueError, match=r"depth_m must be a \(B, 1, H, W\)"):
        deal_loss(cam, depth.repeat(1, 2, 1, 1), tags)
    with pytest.raises(ValueError, match=r"tags shape \(2, 4\) does not match cam_logits \(B, K\)"):
        deal_loss(cam, depth, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"tags must be a \(B, K\)"):
        deal_loss(cam, depth, torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match="batch size mismatch"):
        deal_loss(cam, depth[:1], tags)
    with pytest.raises(ValueError, match="batch size mismatch"):
        deal_loss(cam, torch.cat([depth, depth]), tags)
    for bad in (0.5, 2.0, -1.0, float("nan")):
        wrong = tags.clone()
        wrong[1, 2] = bad
        with pytest.raises(ValueError, match="only 0 and 1"):
            deal_loss(cam, depth, wrong)
    for bad in (float("nan"), float("inf")):
        wrong = cam.clone()
        wrong[0, 1, 3, 3] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            deal_loss(wrong, depth, tags)
    with pytest.raises(ValueError, match="unknown DEAL preset"):
        DEALLoss.from_preset("nope")
    with pytest.raises(TypeError, match="unknown options"):
        DEALLoss(edge_treshold=0.1)


def test_defaults_and_presets_are_the_config_declaration():
    """deal_loss's signature, DEALLoss(), DealLossConfig (loss.deal) and DEAL_PRESETS state one set of defaults."""
    config = DealLossConfig()
    signature = {name: p.default for name, p in inspect.signature(deal_loss).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert signature == {**config.loss_kwargs(), "grid_size": None}
    assert DEALLoss().options == DEALLoss.from_config(config).options == signature
    assert DEALLoss.from_config(replace(config, mu=2.0), grid_size=(8, 8)).options["mu"] == 2.0
    for name, preset in DEAL_PRESETS.items():
        preset_config = replace(config, **preset)  # every preset key is a loss.deal field ...
        preset_config.validate()  # ... with a value the config accepts
        assert DEALLoss.from_preset(name).options == DEALLoss.from_config(preset_config).options, name
    assert replace(config, **DEAL_PRESETS["robust"]) == config, "the default is the robust preset"
    assert DEALLoss.from_preset("paper").options != DEALLoss().options


# --------------------------------------------------------------------------------------------------
# independent reference (method.md §2 steps 1-6), paper preset
# --------------------------------------------------------------------------------------------------

MU, EPS, TAU = 2.5, 1e-6, 1e-6


def _pad1(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad the last two dims by one."""
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return torch.cat([x[..., :, :1], x, x[..., :, -1:]], dim=-1)


def _sobel_mag(x: torch.Tensor, eps: float, scale: float = 0.25) -> torch.Tensor:
    """3x3 Sobel (replicate padding) magnitude sqrt(gx^2 + gy^2 + eps) - sqrt(eps), written out by hand."""
    h, w = x.shape[-2:]
    p = _pad1(x)

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1)) * scale
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1)) * scale
    return torch.sqrt(gx * gx + gy * gy + eps) - math.sqrt(eps)


def _ref_f(a: torch.Tensor) -> torch.Tensor:
    c = math.exp(-2 * MU)
    return (a ** 2 - c * (1 - a) ** 2) / (a ** 2 + c * (1 - a) ** 2)


def _ref_max_norm(r: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    m = torch.where(valid, r, torch.zeros_like(r)).detach().flatten(1).max(dim=1).values
    return (r / m.clamp_min(TAU).view(-1, 1, 1, 1)).clamp(0, 1)


def reference_paper_deal(cam_logits: torch.Tensor, depth_filled: torch.Tensor, tags: torch.Tensor,
                         size: tuple[int, int], hole: torch.Tensor | None = None, sobel_scale: float = 0.25,
                         depth_eps: float = 0.0, cam_eps: float = EPS) -> torch.Tensor:
    """The paper's DEAL from method.md §2, in float64.

    depth_filled must be hole-free (holes already filled); hole (B, 1, H, W) marks the original holes so
    that the valid mask can be rebuilt: a grid cell is a hole cell when more than half of it was hole,
    and invalid when its whole 5x5 neighbourhood is hole cells (method.md: "only cells whose 5x5
    neighbourhood is all hole are excluded"). The depth magnitude uses eps = 0 (no gradient is needed
    there, and eps would break the unit invariance); the CAM magnitude uses eps = 1e-6.
    """
    cam_logits = cam_logits.double()
    d = depth_filled.double()
    b = d.shape[0]
    # step 1: depth to the grid, bicubic with antialias, then clipped to the input's range (no overshoot)
    if tuple(d.shape[-2:]) != tuple(size):
        lo = d.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
        hi = d.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
        d = F.interpolate(d, size=size, mode="bicubic", antialias=True, align_corners=False)
        d = torch.minimum(torch.maximum(d, lo), hi)
    if hole is None:
        valid = torch.ones(b, 1, *size, dtype=torch.bool)
    else:
        frac = F.interpolate(hole.double(), size=size, mode="area")  # hole fraction of each cell
        ok = F.pad((frac <= 0.5).double(), (2, 2, 2, 2))  # non-hole cells; outside the image counts as hole
        hh, ww = size
        valid = torch.zeros(b, 1, hh, ww, dtype=torch.bool)
        for dy in range(5):
            for dx in range(5):
                valid |= ok[..., dy:dy + hh, dx:dx + ww] > 0
    # steps 3-5 for depth
    f_d = _ref_f(_ref_max_norm(_sobel_mag(d, depth_eps, sobel_scale), valid))
    # step 1-2 for the CAM: bilinear to the grid, ReLU, per-map min-max
    s = F.interpolate(cam_logits, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    lo = s.flatten(2).min(dim=2).values[..., None, None]
    hi = s.flatten(2).max(dim=2).values[..., None, None]
    s = (s - lo) / (hi - lo).clamp_min(TAU)
    a_cam = _ref_max_norm(_sobel_mag(s, cam_eps, sobel_scale).flatten(0, 1)[:, None],
                          torch.ones(1, dtype=torch.bool)).view_as(s)
    f_c = _ref_f(a_cam)
    # step 6
    total, kept = cam_logits.new_zeros(()), 0
    for i in range(b):
        m = tags[i].double().sum()
        v = valid[i, 0]
        if m == 0 or not bool(v.any()):
            continue
        mean_f = (tags[i].double()[:, None, None] * f_c[i]).sum(0) / m
        total = total - (mean_f * f_d[i, 0])[v].sum() / v.sum()
        kept += 1
    return total / kept if kept else total * 0.0


def _compare(cam: torch.Tensor, depth: torch.Tensor, tags: torch.Tensor, ref_depth: torch.Tensor,
             hole: torch.Tensor | None = None, **options) -> tuple[float, float]:
    """Loss and CAM gradient of deal_loss (paper preset) vs the reference; returns the max abs differences."""
    cam_impl = cam.clone().requires_grad_(True)
    loss = loss_fn("paper", **options)(cam_impl, depth, tags)
    loss.backward()
    size = options.get("grid_size") or (depth.shape[-2] // options.get("grid_stride", 4),
                                        depth.shape[-1] // options.get("grid_stride", 4))
    cam_ref = cam.clone().double().requires_grad_(True)
    ref = reference_paper_deal(cam_ref, ref_depth, tags, size, hole=hole)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-7)
    g_ref = cam_ref.grad
    torch.testing.assert_close(cam_impl.grad.double(), g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))
    return abs(loss.item() - ref.item()), float((cam_impl.grad.double() - g_ref).abs().max())


REFERENCE_CASES = [  # seed, B, K, depth (H, W), CAM (h, w), grid options
    (0, 2, 3, (64, 48), (16, 12), {}),
    (1, 3, 5, (64, 64), (8, 8), {}),
    (2, 2, 4, (48, 80), (6, 10), {"grid_stride": 8}),
    (3, 3, 3, (40, 40), (10, 10), {"grid_size": (40, 40)}),  # grid == depth size: no depth resampling
    (4, 2, 5, (64, 64), (32, 32), {"grid_size": (20, 24)}),  # CAM downsampled to an odd grid
]
MAX_DIFFS: dict[str, tuple[float, float]] = {}


@pytest.mark.parametrize(("seed", "b", "k", "dsize", "csize", "options"), REFERENCE_CASES)
def test_reference_matches_paper_preset_on_random_inputs(seed, b, k, dsize, csize, options):
    gen = torch.Generator().manual_seed(100 + seed)
    cam = 3.0 * torch.randn(b, k, *csize, generator=gen)
    depth = random_depth(gen, b, *dsize)
    tags = (torch.rand(b, k, generator=gen) > 0.5).float()
    tags[0] = 1.0
    tags[-1] = 0.0  # an image without tags
    d_loss, d_grad = _compare(cam, depth, tags, depth, **options)
    MAX_DIFFS[f"random-{seed}"] = (d_loss, d_grad)
    print(f"reference vs deal_loss (paper), seed {seed}: |dL| = {d_loss:.2e}, max |dgrad| = {d_grad:.2e}")


def test_sobel_scale_does_not_matter_under_max_normalisation():
    """The 1/4 Sobel scale of deal_ros.depth.filters vs the textbook kernel.

    Exactly scale-free without the eps of the magnitude; with the CAM-side eps = 1e-6 (an absolute
    floor of sqrt(eps) = 1e-3 in CAM units) the loss moves by ~2e-3 on random CAMs.
    """
    gen = torch.Generator().manual_seed(7)
    cam = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    depth = random_depth(gen, 2, 64, 64).double()
    tags = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])

    def both(**kw):
        return (reference_paper_deal(cam, depth, tags, (16, 16), sobel_scale=0.25, **kw).item(),
                reference_paper_deal(cam, depth, tags, (16, 16), sobel_scale=1.0, **kw).item())

    quarter, full = both(cam_eps=0.0)
    assert quarter == pytest.approx(full, abs=1e-12)
    quarter, full = both()
    assert abs(quarter - full) < 5e-3
    print(f"Sobel 1/4 vs 1 with CAM eps 1e-6: |dL| = {abs(quarter - full):.2e}")


def load_apc_depth(path: Path) -> torch.Tensor:
    """The APC sample's rotated-uint16 depth PNG -> metres (1, 1, H, W), 0 = missing."""
    v = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert v is not None and v.dtype == np.uint16, path
    v = v.astype(np.int64)
    d = ((v << 13) | (v >> 3)) & 0xFFFF
    return torch.from_numpy((d / 10000.0).astype(np.float32))[None, None]


def _apc_batch(apc_scene: Path, frames=(0, 7)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    depth = torch.cat([load_apc_depth(apc_scene / f"frame-{i:06d}.depth.png") for i in frames])
    segs = []
    for i in frames:
        seg = cv2.imread(str(apc_scene / "segm" / f"frame-{i:06d}.segm.png"), cv2.IMREAD_UNCHANGED)
        segs.append(torch.from_numpy(seg.astype(np.int64)))
    seg = torch.stack(segs)
    values = sorted(int(v) for v in seg.unique() if v != 0)[:4]
    # CAM logits at stride 16: the (FCN) segmentation as a smooth "good" CAM plus noise
    masks = torch.stack([(seg == v).float() for v in values], dim=1)
    gen = torch.Generator().manual_seed(21)
    cam = 4.0 * F.interpolate(masks, size=(30, 40), mode="area") + 0.5 * torch.randn(len(frames), 4, 30, 40,
                                                                                       generator=gen)
    tags = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])[: len(frames)]
    return cam, depth, tags


def test_apc_depth_decoding(apc_scene):
    depth = load_apc_depth(apc_scene / "frame-000000.depth.png")
    assert depth.shape == (1, 1, 480, 640)
    valid = depth[depth > 0]
    assert valid.min().item() > 0.05 and valid.max().item() < 1.6  # README: 0.09-1.5 m
    assert 0.2 < (depth == 0).float().mean().item() < 0.9  # this old sensor leaves many holes


@pytest.mark.parametrize("hole_fill", ["row_far", "far", "pyramid"])
def test_reference_matches_paper_preset_on_real_apc_frames(apc_scene, hole_fill):
    """Real RealSense frames: the reference gets the depth filled by deal_ros.depth.maps.fill_holes (the fill is
    tested in test_depth.py) and rebuilds the valid mask itself; everything else is independent."""
    cam, depth, tags = _apc_batch(apc_scene)
    valid = depth > 0
    filled = fill_holes(depth, valid, hole_fill)
    assert bool(torch.isfinite(filled).all()) and bool((filled > 0).all())
    # hole-free input (the filled depth): whole pipeline after the fill
    diffs = [_compare(cam, filled, tags, filled, hole_fill=hole_fill)]
    # raw depth with holes: fill inside deal_loss, exclusion of large hole regions from the average
    diffs.append(_compare(cam, depth, tags, filled, hole=~valid, hole_fill=hole_fill))
    MAX_DIFFS[f"apc-{hole_fill}"] = (max(d[0] for d in diffs), max(d[1] for d in diffs))
    d_loss, d_grad = MAX_DIFFS[f"apc-{hole_fill}"]
    print(f"reference vs deal_loss (paper) on APC frames, {hole_fill}: |dL| <= {d_loss:.2e},"
          f" max |dgrad| <= {d_grad:.2e}")


def test_robust_preset_on_real_apc_frames(apc_scene):
    cam, depth, tags = _apc_batch(apc_scene)
    for preset in PRESETS:
        for hole_fill in ("row_far", "far", "pyramid", "none"):
            c = cam.clone().requires_grad_(True)
            loss = loss_fn(preset, hole_fill=hole_fill)(c, depth, tags)
            loss.backward()
            assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))
            assert -1.0 < loss.item() < 1.0
            assert bool(torch.isfinite(c.grad).all()) and float(c.grad.abs().max()) > 0
            print(f"APC frames {preset:6s} {hole_fill:8s}: loss {loss.item():+.4f}")
    # sanity: on real depth the segmentation-shaped CAM beats pure noise under the default preset
    noise = torch.randn(cam.shape, generator=torch.Generator().manual_seed(5))
    fn = loss_fn("robust")
    assert fn(cam, depth, tags).item() < fn(noise, depth, tags).item()
