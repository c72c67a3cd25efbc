"""The scene families beyond close-ups: valid frames, structure as background, objects in contact, no dominant
plane where there should be none, and the close-up and tabletop families unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.depth.support_plane import fit_support_plane
from deal_ros.lab.synthetic import (
    CLOSEUP_CLASSES,
    FAMILIES,
    SURFACE_OBJECT0,
    SURFACE_STRUCTURE,
    SyntheticFrame,
    make_closeup_scenes,
    make_family_scenes,
    make_tabletop_scenes,
)

NEW = ("clutter", "bin", "shelf", "no_plane")


@pytest.fixture(scope="module")
def families() -> dict[str, list[SyntheticFrame]]:
    return {family: make_family_scenes(family, 8, 60, 80, seed=3) for family in NEW}


def _touching(frame: SyntheticFrame) -> bool:
    """Two object instances are 4-neighbours somewhere in the frame."""
    s = frame.surface.astype(np.int64)
    pairs = np.concatenate([np.stack([s[:, :-1], s[:, 1:]], -1).reshape(-1, 2),
                            np.stack([s[:-1], s[1:]], -1).reshape(-1, 2)])
    objects = (pairs >= SURFACE_OBJECT0) & (pairs != SURFACE_STRUCTURE)
    return bool((objects.all(1) & (pairs[:, 0] != pairs[:, 1])).any())


@pytest.mark.parametrize("family", NEW)
def test_frames_are_valid(families, family) -> None:
    for f in families[family]:
        assert f.rgb.shape == (60, 80, 3) and f.rgb.dtype == np.uint8
        assert f.depth_m.shape == (60, 80) and f.depth_m.dtype == np.float32 and f.gt_mask.dtype == np.uint8
        valid = f.depth_m[f.depth_m > 0]
        assert 0.6 < valid.size / f.depth_m.size < 1 and valid.min() > 0.1 and valid.max() < 6.5  # metres, some holes
        ids = sorted(set(np.unique(f.gt_mask).tolist()) - {0})
        assert ids and max(ids) <= len(CLOSEUP_CLASSES)
        assert f.tags == [CLOSEUP_CLASSES[i - 1] for i in ids]
        lut = np.zeros(256, np.uint8)
        lut[SURFACE_OBJECT0:SURFACE_OBJECT0 + len(f.object_classes)] = f.object_classes
        assert np.array_equal(lut[f.surface], f.gt_mask)  # table, structure and room are background
    several = np.mean([len(f.tags) >= 2 for f in families[family]])
    assert several >= (0.3 if family == "no_plane" else 0.6)


@pytest.mark.parametrize("family", ["bin", "shelf"])
def test_walls_are_in_view_and_background(families, family) -> None:
    structure = [(f.surface == SURFACE_STRUCTURE).mean() for f in families[family]]
    assert min(structure) > 0.05
    assert all((f.gt_mask[f.surface == SURFACE_STRUCTURE] == 0).all() for f in families[family])


@pytest.mark.parametrize("family", ["clutter", "bin"])
def test_objects_touch(families, family) -> None:
    several = [f for f in families[family] if len(f.object_classes) >= 2]
    assert several and np.mean([_touching(f) for f in several]) >= 0.6


def test_clutter_objects_are_small(families) -> None:
    sizes = [np.bincount(f.surface.ravel(), minlength=256)[SURFACE_OBJECT0:SURFACE_OBJECT0 + len(f.object_classes)]
             / f.surface.size for f in families["clutter"]]
    sizes = np.concatenate(sizes)
    assert sizes.min() >= 0.003 and np.median(sizes) < 0.04


def _plane_share(frames: list[SyntheticFrame]) -> float:
    """Median share of the valid pixels on the support plane the package's finder fits."""
    depth = torch.from_numpy(np.stack([f.depth_m for f in frames]))[:, None]
    on = fit_support_plane(depth).on_plane.flatten(1).sum(1).float()
    return float(torch.median(on / (depth > 0).flatten(1).sum(1)))


def test_no_plane_has_no_dominant_plane(families) -> None:
    assert _plane_share(families["no_plane"]) < 0.35
    assert _plane_share(make_closeup_scenes(8, 60, 80, seed=3)) > 0.6


def test_deterministic_prefix_stable_and_seeded(families) -> None:
    again = make_family_scenes("bin", 2, 60, 80, seed=3)
    assert all(np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth_m, b.depth_m)
               for a, b in zip(again, families["bin"][:2], strict=True))
    other = make_family_scenes("bin", 1, 60, 80, seed=4)[0]
    assert not np.array_equal(other.rgb, families["bin"][0].rgb)


def test_closeup_and_tabletop_families_are_the_makers() -> None:
    assert list(FAMILIES) == ["closeup", "tabletop", *NEW]
    for family, make, classes in (("closeup", make_closeup_scenes, CLOSEUP_CLASSES),
                                  ("tabletop", make_tabletop_scenes, CLOSEUP_CLASSES)):
        a, b = make_family_scenes(family, 2, 48, 64, classes, seed=1), make(2, 48, 64, classes, seed=1)
        assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.gt_mask, y.gt_mask)
                   for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="unknown scene family"):
        make_family_scenes("attic", 1)
