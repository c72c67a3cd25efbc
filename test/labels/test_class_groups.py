from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deal_ros.labels.class_groups import (
    TagContrast,
    contrast_from_extra,
    describe_group,
    groups_of,
    merge_class_scores,
)


def test_classes_tagged_in_the_same_frames_form_groups_until_a_frame_splits_them() -> None:
    contrast = TagContrast(6)
    assert contrast.groups() == []
    for _ in range(50):  # one fixed scene: mug, box and ball always together; class 3 never tagged
        contrast.update(np.array([1, 1, 1, 0, 0, 0]))
    contrast.update(torch.tensor([[0, 0, 0, 0, 1, 1]]))  # a batch (B, K) of another scene
    assert contrast.groups() == [(0, 1, 2), (4, 5)]
    assert contrast.presence().shape == (2, 6), "only the distinct patterns are kept"
    contrast.update([1, 1, 0, 0, 0, 0])  # a frame with mug and box but not the ball: the ball leaves the group
    assert contrast.groups() == [(0, 1), (4, 5)]
    assert contrast.representatives().tolist() == [0, 0, 2, 3, 4, 4]
    assert groups_of(contrast.representatives()) == contrast.groups()
    contrast.update([0, 0, 0, 0, 0, 1])
    assert contrast.groups() == [(0, 1)]
    contrast.clear()
    assert contrast.groups() == [] and contrast.representatives().tolist() == list(range(6))


def test_bad_tags_are_refused() -> None:
    with pytest.raises(ValueError, match="K = 3"):
        TagContrast(3).update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="num_classes"):
        TagContrast(0)


def test_state_round_trips_through_json() -> None:
    contrast = TagContrast(4)
    contrast.update(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]]))
    state = json.loads(json.dumps(contrast.state()))
    assert state == {"num_classes": 4, "patterns": ["0011", "1100"]}
    restored = TagContrast.from_state(state)
    assert restored.groups() == contrast.groups() == [(0, 1), (2, 3)]
    assert contrast_from_extra({"class_contrast": state}, 4).groups() == [(0, 1), (2, 3)]
    assert contrast_from_extra({"trust": {}}, 4).groups() == [], "checkpoints without it: nothing seen"
    with pytest.raises(ValueError, match="for 4 classes, not 5"):
        contrast_from_extra({"class_contrast": state}, 5)
    with pytest.raises(ValueError, match="damaged"):
        contrast_from_extra({"class_contrast": {"num_classes": 4, "patterns": ["01x1"]}}, 4)


def test_merge_puts_each_groups_max_into_its_first_member() -> None:
    scores = torch.rand(2, 4, 3, 5)
    tags = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    merged, merged_tags = merge_class_scores(scores, tags, np.array([0, 0, 2, 3]))
    assert merged.shape == scores.shape and merged_tags.shape == tags.shape
    assert torch.equal(merged[:, 0], torch.maximum(scores[:, 0], scores[:, 1]))
    assert (merged[:, 1] == 0).all()
    assert torch.equal(merged[:, 2:], scores[:, 2:]), "classes outside a group are unchanged"
    assert merged_tags.tolist() == [[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], "a member's tag tags the group"
    with pytest.raises(ValueError, match=r"\(4,\)"):
        merge_class_scores(scores, tags, np.array([0, 0]))


def test_the_warning_names_the_classes_and_what_is_done() -> None:
    assert describe_group(["025_mug", "061_foam_brick"], merged=True) == (
        "classes 025_mug, 061_foam_brick were tagged in exactly the same frames: tags cannot tell them apart "
        "(labelled as 025_mug)")
    assert "split at random" in describe_group(["a", "b"], merged=False)
