"""Naming depth parts from the contrast between tag patterns (deal_ros.labels.part_names) and its use in labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.config import PseudoLabelConfig
from deal_ros.labels.objects import one_class_per_object, place_by_contrast
from deal_ros.labels.part_names import PartBank, part_looks
from deal_ros.labels.pseudo_labels import make_pseudo_labels, remember_frame_parts

RED, BLUE, GREEN, YELLOW, GREY = (220, 30, 30), (30, 40, 220), (30, 200, 40), (230, 220, 30), (128, 128, 128)
SIZE = 64


def _scene(left: tuple[int, int, int], right: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey table 1 m away with two coloured boxes standing on it side by side (0.70 m and 0.72 m): rgb (1, 3, H, W)
    in [0, 1], depth (1, 1, H, W) metres."""
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[:] = GREY
    depth = np.full((SIZE, SIZE), 1.0, np.float32)
    rgb[16:48, 6:28], depth[16:48, 6:28] = left, 0.70
    rgb[16:48, 36:58], depth[16:48, 36:58] = right, 0.72
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, torch.from_numpy(depth)[None, None]


def _tags(*classes: int, num_classes: int = 4) -> torch.Tensor:
    tags = torch.zeros(1, num_classes)
    tags[0, list(classes)] = 1
    return tags


def _boxes() -> tuple[np.ndarray, np.ndarray]:
    parts = np.zeros((SIZE, SIZE), np.int32)
    parts[16:48, 6:28], parts[16:48, 36:58] = 1, 2
    return parts, np.array([1, 2])


def test_looks_are_unit_rows_that_tell_colours_apart() -> None:
    rgb, _ = _scene(RED, BLUE)
    parts, kept = _boxes()
    looks = part_looks((rgb[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), parts, kept)
    assert looks.shape[0] == 2 and looks.dtype == np.float32
    assert np.allclose(np.linalg.norm(looks, axis=1), 1.0, atol=1e-5)
    assert looks[0] @ looks[1] < 0.1, "red and blue share no hue bin"
    twins, _ = _scene(RED, RED)
    same = part_looks((twins[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), parts, kept)
    assert same[0] @ same[1] == pytest.approx(1.0, abs=1e-5)


def test_the_class_two_patterns_share_is_the_part_that_looks_alike_in_both() -> None:
    """Class 0 is tagged with class 1 in one scene and with class 2 in another; class 3 is elsewhere."""
    cfg = PseudoLabelConfig(refine="none")
    bank = PartBank(4)
    for left, right, tags in ((RED, BLUE, _tags(0, 1)), (GREEN, RED, _tags(0, 2)), (YELLOW, BLUE, _tags(3, 1))):
        rgb, depth = _scene(left, right)
        remember_frame_parts(bank, rgb, depth, tags, cfg)
    assert len(bank) == 3
    rgb, depth = _scene(BLUE, RED)  # the first scene again, seen from the other side
    parts, kept = _boxes()
    looks = part_looks((rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), parts, kept)
    scores = bank.scores(_tags(0, 1)[0].numpy(), looks)
    assert scores[0, 1] > scores[0, 0], "red (right) is class 0: a look-alike where 0 is tagged, none where not"
    assert np.isnan(scores[2:]).all(), "untagged classes have no score"
    # class 1 (blue) is tagged in the third pattern too, with yellow: blue is what the two share
    assert scores[1, 0] > scores[1, 1]
    assert place_by_contrast(scores[[0, 1]]) == {1: 0, 0: 1}


def test_a_class_no_other_pattern_tags_gets_no_contrast() -> None:
    bank = PartBank(4)
    cfg = PseudoLabelConfig(refine="none")
    rgb, depth = _scene(RED, BLUE)
    for _ in range(3):  # one scene, many frames: nothing to contrast with
        remember_frame_parts(bank, rgb, depth, _tags(0, 1), cfg)
    parts, kept = _boxes()
    looks = part_looks((rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), parts, kept)
    assert np.isnan(bank.scores(_tags(0, 1)[0].numpy(), looks)).all()
    assert place_by_contrast(np.full((2, 2), np.nan)) == {}


def test_pseudo_labels_name_the_objects_by_contrast_where_the_cam_cannot() -> None:
    """The CAM calls both boxes of the scene class 1 (it learnt the scene); the contrast with the other scenes says
    the red box is class 0; the other box then takes the tag left, class 1."""
    cfg = PseudoLabelConfig(refine="none", part_contrast=True)
    bank = PartBank(4)
    for left, right, tags in ((GREEN, RED, _tags(0, 2)), (YELLOW, BLUE, _tags(3, 1))):
        rgb, depth = _scene(left, right)
        remember_frame_parts(bank, rgb, depth, tags, cfg)
    rgb, depth = _scene(RED, BLUE)
    cam = torch.zeros(1, 4, 16, 16)
    cam[0, 1, 3:13, 1:15] = 4.0  # class 1 on both boxes
    cam[0, 0, 3:13, 1:7] = 1.0  # class 0 weak on the red box, at its strongest on a corner of the blue one
    cam[0, 0, 4, 13] = 4.0
    tags = _tags(0, 1)
    by_cam, _ = make_pseudo_labels(cam, tags, (SIZE, SIZE), cfg, rgb, depth)  # no bank: the CAM decides
    named, _ = make_pseudo_labels(cam, tags, (SIZE, SIZE), cfg, rgb, depth, part_bank=bank)
    red, blue = named[0, 16:48, 6:28], named[0, 16:48, 36:58]
    assert (by_cam[0, 16:48, 6:28] == 2).float().mean() > 0.9, "pixel-wise, the CAM names the red box class 1"
    assert (red[red != 255] == 1).all() and (red != 255).float().mean() > 0.9
    assert (blue[blue != 255] == 2).float().mean() > 0.9
    assert torch.equal(named == 0, by_cam == 0), "where the objects are does not change"
    assert len(bank) == 3, "the labelled frame joined the bank"
    make_pseudo_labels(cam, tags, (SIZE, SIZE), cfg, rgb, depth, part_bank=bank, add_to_bank=False)
    assert len(bank) == 3


def test_with_one_class_per_object_the_rest_take_one_class_each() -> None:
    bank = PartBank(3)
    cfg = PseudoLabelConfig(refine="none")
    rgb, depth = _scene(GREEN, RED)
    remember_frame_parts(bank, rgb, depth, _tags(0, 2, num_classes=3), cfg)
    rgb, depth = _scene(YELLOW, BLUE)
    remember_frame_parts(bank, rgb, depth, _tags(1, num_classes=3), cfg)
    rgb, depth = _scene(RED, BLUE)
    labels = torch.full((1, SIZE, SIZE), 0, dtype=torch.int64)
    labels[0, 16:48, 6:58] = 2  # both boxes (and the gap) class 1
    scores = torch.zeros(1, 3, SIZE, SIZE)
    scores[0, 1, 16:48, 6:58] = 0.9
    stands_out = torch.from_numpy(depth[0, 0].numpy() < 0.9)[None]
    out = one_class_per_object(labels, scores, stands_out, depth[:, 0], _tags(0, 1, num_classes=3), rgb, bank)
    assert (out[0, 16:48, 6:28] == 1).all() and (out[0, 16:48, 36:58] == 2).all()


def test_the_bank_keeps_the_newest_frames_and_patterns() -> None:
    bank = PartBank(3, frames_per_pattern=2, max_patterns=2)
    look = np.eye(4, dtype=np.float32)[:1]
    for _ in range(3):
        bank.add(np.array([1, 0, 0]), look)
    assert len(bank) == 2
    bank.add(np.array([0, 1, 0]), look)
    bank.add(np.array([0, 0, 1]), look)  # a third pattern: the one updated longest ago goes
    assert len(bank) == 2 and bank.patterns == 2
    bank.add(np.array([0, 0, 0]), look)  # untagged: says nothing
    bank.add(np.array([1, 0, 0]), look[:0])  # no part: says nothing
    assert len(bank) == 2
    with pytest.raises(ValueError, match=r"tags must be \(3,\)"):
        bank.add(np.array([1, 0]), look)
    bank.clear()
    assert len(bank) == 0 and np.isnan(bank.scores(np.array([1, 1, 0]), look)).all()
