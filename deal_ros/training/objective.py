"""The training objective in one place: every loss term, its weight and its warm-up, by name.

    L = L_cls + lambda(step) * L_DEAL + seg_weight * CE(seg, pseudo-labels) + support_weight * L_support
        + sum over the enabled structure losses of weight * term

with L_cls = (1 - w) L_gap + w L_isl when ISL is on, lambda ramping from 0 over loss.deal.warmup_steps and
the segmentation CE starting at loss.seg_warmup_steps (on pseudo-labels of loss.seg_label_size).
`Objective(...)(...)` returns the total and every term unweighted under its name; the step statistics
(StepStats' loss_* fields) are those names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.config import IGNORE_INDEX, DealRosConfig
from deal_ros.config.loss_sections import DealRegion
from deal_ros.depth.support_plane import SupportPlane
from deal_ros.labels.part_names import PartBank
from deal_ros.labels.pseudo_labels import fit_depth_prior, make_pseudo_labels
from deal_ros.losses import DEALLoss, classification_loss
from deal_ros.losses.structure import StructureLosses
from deal_ros.losses.support import support_plane_loss
from deal_ros.training.trust import HeadAgreement, head_agreement

if TYPE_CHECKING:
    from deal_ros.models import CAMNet
    from deal_ros.models.cam_net import CAMOutput

STAT_NAMES = {"smoothness": "smooth"}
"""Term name -> the suffix of its StepStats field (loss_<suffix>) where the two differ."""


@dataclass
class ObjectiveValue:
    """One evaluation of the objective on a batch."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    """Every term unweighted, by name: cls (ISL mixed in), deal, seg, isl, support, then the structure losses'."""
    deal_weight: float
    pseudo_labels: torch.Tensor | None
    """(B, h, w) pseudo-labels of this batch (255 = not confident), None before they start."""
    pseudo_coverage: float
    """Fraction of pixels with a confident pseudo-label (0.0 without pseudo-labels)."""
    agreement: HeadAgreement | None = None
    """The segmentation head's argmax against the pseudo-labels (None without confident ones): the trust signal."""

    def term_stats(self) -> dict[str, float]:
        """The StepStats fields of the terms: loss_<name> -> value."""
        return {f"loss_{STAT_NAMES.get(name, name)}": float(value.detach()) for name, value in self.terms.items()}

    def describe(self) -> str:
        """The terms in one line (for the warning of a non-finite loss)."""
        return ", ".join(f"{name} {float(value)}" for name, value in self.terms.items())


def deal_cells(plane: SupportPlane, region: DealRegion, cell_px: int) -> torch.Tensor | None:
    """Where DEAL counts (loss.deal.region), (B, 1, H, W) bool at the prior's size; None = everywhere. 'objects':
    what stands out of the surfaces, the whole frame where none was found. Counted per loss cell (cell_px pixels a
    side): the cells the region holds at least half of, and their neighbours, so that an outline is in and specks
    of sensor noise are not."""
    if region == "everywhere":
        return None
    prior = plane.prior
    pixels = (prior > 0) | ~plane.found[:, None, None, None]
    share = F.avg_pool2d(pixels.float(), cell_px, stride=cell_px, ceil_mode=True)
    cells = F.max_pool2d((share >= 0.5).float(), 3, stride=1, padding=1)
    return F.interpolate(cells, scale_factor=cell_px, mode="nearest")[..., :prior.shape[-2], :prior.shape[-1]] > 0


class Objective:
    """The loss modules of a config for a model: DEAL, and the structure losses with their trainable modules.

    previous: the objective this one replaces at run time; structure modules with unchanged build options
    (and their training) are kept.
    """

    def __init__(self, cfg: DealRosConfig, model: CAMNet, device: torch.device,
                 previous: Objective | None = None) -> None:
        self.cfg = cfg
        self.deal = DEALLoss.from_config(cfg.loss.deal)
        # The structure losses' trainable modules (boundary branch, reconstruction decoder) live outside CAMNet
        # and train with their own optimizer, so checkpoints, resume() and reset() of the model are unchanged.
        self.structure: StructureLosses = StructureLosses(
            cfg.loss, model, None if previous is None else previous.structure).to(device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.structure.trainable_parameters()

    def deal_weight(self, step: int) -> float:
        """lambda at `step`: ramps linearly from 0 over warmup_steps (the classifier must lead early)."""
        deal = self.cfg.loss.deal
        if not deal.enabled:
            return 0.0
        if deal.warmup_steps == 0:
            return deal.weight
        return deal.weight * min(1.0, step / deal.warmup_steps)

    def __call__(self, out: CAMOutput, rgb: torch.Tensor, depth_m: torch.Tensor, tags: torch.Tensor,
                 step: int, representatives: torch.Tensor | None = None,
                 part_bank: PartBank | None = None) -> ObjectiveValue:
        """out: the network's output on rgb (B, 3, H, W) 0..255 with depth_m (B, 1, H, W) and tags (B, K);
        representatives: (K,) int64, the pseudo-labels' merge of indistinct classes; part_bank: the looks of the
        parts seen, for pseudo_label.part_contrast (both as make_pseudo_labels takes them)."""
        loss_cfg, pseudo_cfg = self.cfg.loss, self.cfg.pseudo_label
        lam = self.deal_weight(step)
        loss_gap = classification_loss(out.class_logits, tags)
        zero = loss_gap.new_zeros(())
        loss_isl = zero
        loss_cls = loss_gap
        if self.structure.isl is not None:
            loss_isl = self.structure.isl(out.cam_logits, depth_m, tags)
            loss_cls = (1.0 - loss_cfg.isl.weight) * loss_gap + loss_cfg.isl.weight * loss_isl
        loss_seg = zero
        coverage = 0.0
        labels = None
        agreement = None
        seg_on = loss_cfg.seg_weight > 0
        wants_labels = step >= loss_cfg.seg_warmup_steps and (seg_on or self.structure.needs_pseudo_labels)
        deal_in_region = lam > 0 and loss_cfg.deal.region != "everywhere"
        plane = None  # the support surfaces of each frame, shared by the losses and the pseudo-labels
        if loss_cfg.support_weight > 0 or (wants_labels and pseudo_cfg.support_plane) or deal_in_region:
            plane = fit_depth_prior(depth_m, pseudo_cfg)
        loss_deal = zero
        if lam > 0:
            cells = deal_cells(plane, loss_cfg.deal.region, loss_cfg.deal.grid_stride) if plane is not None else None
            loss_deal = self.deal(out.cam_logits, depth_m, tags, cells)
        loss_support = zero
        if plane is not None and loss_cfg.support_weight > 0:
            loss_support = support_plane_loss(out.cam_logits, plane.background)
        if wants_labels:
            seg_logits = out.seg_logits.float()
            if loss_cfg.seg_label_size == "input":
                seg_logits = F.interpolate(seg_logits, size=depth_m.shape[-2:], mode="bilinear", align_corners=False)
            seg_size = (seg_logits.shape[-2], seg_logits.shape[-1])
            prior = None
            if pseudo_cfg.support_plane and plane is not None:
                prior = plane.prior  # at depth_m's size: resized only for labels at the logits' size
                if tuple(prior.shape[-2:]) != seg_size:
                    prior = F.interpolate(prior.float(), size=seg_size, mode="nearest-exact").to(torch.int8)
            labels, _ = make_pseudo_labels(out.cam_logits.detach(), tags, seg_size, pseudo_cfg,
                                           rgb / 255.0, depth_m, plane_prior=prior,
                                           representatives=representatives, part_bank=part_bank)
            confident = labels != IGNORE_INDEX
            coverage = float(confident.float().mean())
            agreement = head_agreement(seg_logits.detach(), labels)  # no_grad: the loss is untouched
            if seg_on and bool(confident.any()):
                loss_seg = F.cross_entropy(seg_logits, labels, ignore_index=IGNORE_INDEX)
        structure = self.structure.terms(out.cam_logits, depth_m, tags, rgb=rgb / 255.0, pseudo_labels=labels,
                                         features=out.features, step=step)
        weights = self.structure.weights
        total = (loss_cls + lam * loss_deal + loss_cfg.seg_weight * loss_seg
                 + loss_cfg.support_weight * loss_support)
        for name, term in structure.items():
            total = total + weights[name] * term
        terms = {"cls": loss_cls, "deal": loss_deal, "seg": loss_seg, "isl": loss_isl, "support": loss_support,
                 **structure}
        return ObjectiveValue(total, terms, lam, labels, coverage, agreement)
