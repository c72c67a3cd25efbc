from __future__ import annotations

import torch
import torch.nn.functional as F

from deal_ros.config import IGNORE_INDEX, PseudoLabelConfig
from deal_ros.labels.pseudo_labels import make_pseudo_labels


def _blob_cam(size: int = 16, centre=(8, 8), radius: float = 4.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return 5.0 * torch.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (2 * radius**2))


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_thresholds_give_foreground_background_and_an_ignore_band() -> None:
    cam = torch.stack([_blob_cam(), _blob_cam(centre=(2, 2))])[None]  # (1, 2, 16, 16)
    tags = torch.tensor([[1.0, 0.0]])
    labels, confidence = make_pseudo_labels(cam, tags, (64, 64), PseudoLabelConfig(refine="none"))
    assert labels.shape == (1, 64, 64) and labels.dtype == torch.int64
    assert labels[0, 32, 32] == 1, "the blob centre is class 1"
    assert labels[0, 0, 63] == 0, "far from the blob is background"
    assert (labels == IGNORE_INDEX).any(), "the uncertain rim is ignored"
    assert not (labels == 2).any(), "an untagged class never appears, however strong its CAM"
    assert ((confidence >= 0) & (confidence <= 1)).all()


def test_no_tags_means_all_background() -> None:
    cam = _blob_cam()[None, None]
    labels, _ = make_pseudo_labels(cam, torch.zeros(1, 1), (32, 32), PseudoLabelConfig())
    assert (labels == 0).all()


def test_depth_bilateral_refinement_snaps_to_the_object_boundary() -> None:
    # A 24x24 square object 0.6 m away on a 1.0 m plane; the CAM is a blurry, offset blob.
    size = 64
    truth = torch.zeros(size, size, dtype=torch.bool)
    truth[20:44, 20:44] = True
    depth = torch.where(truth, 0.6, 1.0)[None, None]
    rgb = torch.where(truth, 0.8, 0.3)[None, None].expand(1, 3, size, size)
    cam = F.interpolate(_blob_cam(16, centre=(9, 9), radius=4.0)[None, None], size=(16, 16))
    tags = torch.ones(1, 1)
    plain, _ = make_pseudo_labels(cam, tags, (size, size), PseudoLabelConfig(refine="none"))
    refined, _ = make_pseudo_labels(cam, tags, (size, size), PseudoLabelConfig(refine="depth_bilateral"),
                                    rgb, depth)
    assert _iou(refined[0] == 1, truth) > _iou(plain[0] == 1, truth) + 0.05


def test_refinement_tolerates_holes_in_depth() -> None:
    depth = torch.ones(1, 1, 32, 32)
    depth[..., 10:20, :] = float("nan")
    depth[..., :, :3] = 0.0
    cam = _blob_cam(8, centre=(4, 4), radius=2.0)[None, None]
    labels, confidence = make_pseudo_labels(cam, torch.ones(1, 1), (32, 32), PseudoLabelConfig(),
                                            torch.rand(1, 3, 32, 32), depth)
    assert torch.isfinite(confidence).all()
    assert (labels == 1).any()


def test_representatives_label_both_objects_of_a_group_as_its_first_member() -> None:
    # Two blobs, class 1 on the left and class 2 on the right, both tagged; the tags never told them apart.
    cam = torch.stack([_blob_cam(centre=(8, 3), radius=2.0), _blob_cam(centre=(8, 12), radius=2.0)])[None]
    tags = torch.ones(1, 2)
    cfg = PseudoLabelConfig(refine="none")
    plain, _ = make_pseudo_labels(cam, tags, (16, 16), cfg)
    assert plain[0, 8, 3] == 1 and plain[0, 8, 12] == 2
    merged, _ = make_pseudo_labels(cam, tags, (16, 16), cfg, representatives=torch.tensor([0, 0]))
    assert merged[0, 8, 3] == 1 and merged[0, 8, 12] == 1
    assert not (merged == 2).any()
    assert torch.equal(merged, torch.where(plain == 2, 1, plain)), "the pixels themselves are unchanged"
