"""The training objective: the segmentation head meets its pseudo-labels at the size loss.seg_label_size says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deal_ros.config import IGNORE_INDEX, DealRosConfig, PseudoLabelConfig
from deal_ros.depth.support_plane import SupportPlane
from deal_ros.frames.tags import tags_to_vector
from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes
from deal_ros.labels.pseudo_labels import fit_depth_prior
from deal_ros.models import build_cam_net
from deal_ros.training.objective import Objective, deal_cells

SIZE = (64, 80)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames = make_tabletop_scenes(2, *SIZE, seed=5)
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames])).permute(0, 3, 1, 2).float()
    depth_m = torch.from_numpy(np.stack([f.depth_m for f in frames]))[:, None]
    tags = torch.from_numpy(np.stack([tags_to_vector(f.tags, DEFAULT_CLASSES) for f in frames]).astype(np.float32))
    return rgb, depth_m, tags


@pytest.mark.parametrize("label_size", ["input", "logits"])
def test_seg_labels_at_the_chosen_size_and_the_loss_reaches_the_head(batch, label_size: str) -> None:
    cfg = DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({
        "model.input_height": SIZE[0], "model.input_width": SIZE[1], "model.pretrained_path": "",
        "model.output_stride": 8, "loss.seg_warmup_steps": 0, "loss.seg_label_size": label_size})
    torch.manual_seed(0)
    model = build_cam_net(cfg.model, len(DEFAULT_CLASSES))
    rgb, depth_m, tags = batch
    out = model(rgb)
    value = Objective(cfg, model, torch.device("cpu"))(out, rgb, depth_m, tags, step=1)
    expected = SIZE if label_size == "input" else tuple(out.seg_logits.shape[-2:])
    assert value.pseudo_labels is not None and tuple(value.pseudo_labels.shape[-2:]) == expected
    assert (value.pseudo_labels == 0).any() and (value.pseudo_labels != IGNORE_INDEX).any()
    assert value.agreement is not None
    seg_loss = value.terms["seg"].detach()
    assert torch.isfinite(seg_loss) and float(seg_loss) > 0
    value.total.backward()
    head_grads = [p.grad for p in model.seg_head.parameters() if p.grad is not None]
    assert head_grads and all(torch.isfinite(g).all() for g in head_grads)
    assert sum(float(g.abs().sum()) for g in head_grads) > 0


def test_deal_regions_follow_the_depth_prior() -> None:
    frames = make_tabletop_scenes(2, *SIZE, seed=5)
    depth_m = torch.from_numpy(np.stack([f.depth_m for f in frames]))[:, None]
    objects_gt = torch.from_numpy(np.stack([f.gt_mask for f in frames]))[:, None] > 0
    plane = fit_depth_prior(depth_m, PseudoLabelConfig())
    assert plane.found.all()
    assert deal_cells(plane, "everywhere", 4) is None
    objects = deal_cells(plane, "objects", 4)
    assert objects is not None
    assert objects[objects_gt].float().mean() > 0.85 and objects.float().mean() < 0.3  # the objects, not the table
    lost = plane.found.clone()
    lost[1] = False  # where no surface is found, DEAL is the only depth cue: the whole frame counts
    cells = deal_cells(SupportPlane(plane.on_plane, plane.behind, plane.in_front, lost), "objects", 4)
    assert cells is not None and cells[1].all() and torch.equal(cells[0], objects[0])


@pytest.mark.parametrize("region", ["everywhere", "objects"])
def test_deal_in_each_region_reaches_the_cam(batch, region: str) -> None:
    cfg = DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({
        "model.input_height": SIZE[0], "model.input_width": SIZE[1], "model.pretrained_path": "",
        "model.output_stride": 8, "loss.deal.enabled": True, "loss.deal.warmup_steps": 0,
        "loss.deal.region": region, "loss.seg_weight": 0.0})
    torch.manual_seed(0)
    model = build_cam_net(cfg.model, len(DEFAULT_CLASSES))
    rgb, depth_m, tags = batch
    value = Objective(cfg, model, torch.device("cpu"))(model(rgb), rgb, depth_m, tags, step=1)
    deal = value.terms["deal"]
    assert deal.requires_grad and -1.0 <= float(deal.detach()) <= 1.0 and float(deal.detach()) != 0.0
