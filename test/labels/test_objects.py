from __future__ import annotations

import numpy as np
import torch

from deal_ros.config import PseudoLabelConfig
from deal_ros.labels.objects import assign_part_classes, one_class_per_object
from deal_ros.labels.pseudo_labels import make_pseudo_labels


def _two_boxes(size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1.0 m table with two boxes side by side that touch in the image (0.70 m and 0.60 m away):
    depth (1, 1, H, W) and the boxes' masks (H, W) bool, left then right."""
    left = torch.zeros(size, size, dtype=torch.bool)
    right = torch.zeros(size, size, dtype=torch.bool)
    left[16:48, 8:32] = True
    right[16:48, 32:56] = True
    depth = torch.full((size, size), 1.0)
    depth[left], depth[right] = 0.70, 0.60
    return depth[None, None], left, right


def test_each_tag_gets_a_part_of_its_own_before_the_rest_take_their_best() -> None:
    mean_scores = np.array([[0.9, 0.8, 0.7],   # tag 0 is the best for every part
                            [0.1, 0.6, 0.2]])
    assert assign_part_classes(mean_scores).tolist() == [0, 1, 0]
    # fewer parts than tags: nobody can have a part of their own, each part takes its best
    assert assign_part_classes(mean_scores[:, :1]).tolist() == [0]
    assert assign_part_classes(mean_scores[:1]).tolist() == [0, 0, 0]
    # parts placed already (by contrast) keep their tag; the tag left gets a part of its own among the others
    assert assign_part_classes(mean_scores, {1: 0}).tolist() == [1, 0, 1]
    # every tag placed: the other parts take their best tag, nobody is forced onto a second part
    assert assign_part_classes(mean_scores, {0: 1, 1: 0}).tolist() == [1, 0, 0]


def test_a_box_split_between_two_classes_takes_one() -> None:
    depth, left, right = _two_boxes()
    labels = torch.zeros(1, 64, 64, dtype=torch.int64)
    labels[0][left] = 1
    labels[0][right] = 2
    labels[0, 16:48, 32:40] = 1  # class 1 leaks onto the right box's first third
    labels[0, 20, 20] = 255  # an ignored pixel stays ignored
    scores = torch.zeros(1, 2, 64, 64)
    scores[0, 0][left] = 0.9
    scores[0, 1][right] = 0.8
    scores[0, 0, 16:48, 32:40] = 0.85
    stands_out = (left | right)[None]
    out = one_class_per_object(labels, scores, stands_out, depth[:, 0], torch.ones(1, 2))
    assert (out[0][right] == 2).all(), "the right box is class 2 as a whole"
    assert (out[0][left & (labels[0] != 255)] == 1).all()
    assert out[0, 20, 20] == 255 and (out[0][~stands_out[0]] == 0).all()
    single = one_class_per_object(labels, scores, stands_out, depth[:, 0], torch.tensor([[1.0, 0.0]]))
    assert torch.equal(single, labels), "one tag: nothing to tell apart"


def test_pseudo_labels_give_touching_objects_one_class_each() -> None:
    depth, left, right = _two_boxes()
    # The CAM of class 1 covers both boxes and beats class 2 on most of the right one.
    cam = torch.zeros(1, 2, 16, 16)
    cam[0, 0, 4:12, 2:12] = 4.0
    cam[0, 1, 4:12, 10:14] = 3.0
    tags = torch.ones(1, 2)
    cfg = PseudoLabelConfig(refine="none")
    mixed, _ = make_pseudo_labels(cam, tags, (64, 64), cfg, None, depth)
    assert (mixed[0][right] == 1).float().mean() > 0.5, "pixel-wise, class 1 takes most of the right box"
    whole, _ = make_pseudo_labels(cam, tags, (64, 64), PseudoLabelConfig(refine="none", one_class_per_object=True),
                                  None, depth)
    found_right = whole[0][right]
    assert (found_right[found_right != 255] == 2).all(), "the right box is class 2: it had to be someone's"
    found_left = whole[0][left]
    assert (found_left[found_left != 255] == 1).all()
    assert torch.equal(whole == 0, mixed == 0) and torch.equal(whole == 255, mixed == 255), "only classes change"
