"""The enabled structure losses of a LossConfig, built and called together (what the trainer uses).

Keeps the trainer's loop short: ``StructureLosses(cfg.loss, model)`` builds each enabled loss,
``terms(...)`` returns the unweighted value of each, ``weights`` their weights, and
``trainable_parameters()`` the auxiliary parameters (boundary branch, reconstruction decoder) that the
trainer's auxiliary optimizer trains. ISL is not here: it mixes into the classification loss.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import nn

from deal_ros.config import LossConfig, ModelConfig
from deal_ros.losses.boundary import BoundaryLoss
from deal_ros.losses.fsl import FSLLoss
from deal_ros.losses.isl import ISLLoss
from deal_ros.losses.smoothness import SmoothnessLoss
from deal_ros.losses.ssc import ReconstructionLoss, SSCLoss

if TYPE_CHECKING:
    from deal_ros.models.backbone import Backbone

TERMS = ("boundary", "fsl", "smoothness", "ssc", "recon")
"""Call order: the boundary branch runs first, its prediction is the 'learned' S of smoothness."""

_DEPTH_EDGE_KEYS = ("edge_operator", "log_depth", "edge_norm", "edge_threshold", "edge_percentile",
                    "plane_window", "hole_fill", "hole_exclude_window", "mu")


def _options(part: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part)
            if f.name not in ("enabled", "weight", *skip)}


class CAMNetLike(Protocol):
    """What the structure losses read of the model (a CAMNet)."""

    backbone: Backbone
    num_classes: int
    cfg: ModelConfig

    def normalize_input(self, rgb: torch.Tensor) -> torch.Tensor: ...


ReusedLoss = TypeVar("ReusedLoss", BoundaryLoss, ReconstructionLoss)


class StructureLosses(nn.Module):
    """Enabled structure losses for a CAMNet-like model (``backbone.out_channels``, ``backbone``,
    ``normalize_input``, ``cfg.output_stride``)."""

    def __init__(self, cfg: LossConfig, model: CAMNetLike, previous: StructureLosses | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.losses = nn.ModuleDict()
        self.isl = ISLLoss(cfg.isl.num_samples, cfg.isl.eps) if cfg.isl.enabled else None
        if cfg.boundary.enabled:
            boundary = self._reuse(previous, "boundary", _options(cfg.boundary), BoundaryLoss)
            if boundary is None:
                boundary = BoundaryLoss(model.backbone.out_channels, **_options(cfg.boundary))
            boundary.build_options = _options(cfg.boundary)
            self.losses["boundary"] = boundary
        if cfg.fsl.enabled:
            self.losses["fsl"] = FSLLoss(**_options(cfg.fsl))
        if cfg.smoothness.enabled:
            depth_kwargs = {k: getattr(cfg.deal, k) for k in _DEPTH_EDGE_KEYS}
            self.losses["smoothness"] = SmoothnessLoss(**_options(cfg.smoothness), depth_edge_kwargs=depth_kwargs)
        if cfg.ssc.enabled:
            self.losses["ssc"] = SSCLoss(**_options(cfg.ssc))
        if cfg.recon.enabled:
            build = {"hidden_channels": cfg.recon.hidden_channels, "out_stride": cfg.recon.out_stride,
                     "perceptual": cfg.recon.perceptual_weight > 0}
            recon = self._reuse(previous, "recon", build, ReconstructionLoss)
            if recon is None:
                recon = ReconstructionLoss(
                    model.num_classes, model.cfg.output_stride, model.backbone if build["perceptual"] else None,
                    model.normalize_input, cfg.recon.hidden_channels, cfg.recon.out_stride)
            recon.l1_weight, recon.perceptual_weight = cfg.recon.l1_weight, cfg.recon.perceptual_weight
            recon.build_options = build
            self.losses["recon"] = recon

    @staticmethod
    def _reuse(previous: StructureLosses | None, name: str, options: dict[str, Any],
               kind: type[ReusedLoss]) -> ReusedLoss | None:
        """Keep a trained auxiliary module across run-time config changes when its build options are equal."""
        if previous is None or name not in previous.losses:
            return None
        module = previous.losses[name]
        assert isinstance(module, kind)  # previous.losses[name] was built here as `kind`
        return module if getattr(module, "build_options", None) == options else None

    @property
    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self.cfg, name).weight) for name in self.losses}

    @property
    def needs_pseudo_labels(self) -> bool:
        return any(getattr(m, "needs_pseudo_labels", False) for m in self.losses.values())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def terms(self, cam_logits: torch.Tensor, depth_m: torch.Tensor, tags: torch.Tensor,
              **context: Any) -> dict[str, torch.Tensor]:
        """Unweighted value of every enabled loss (boundary first; its prediction goes into the context)."""
        out: dict[str, torch.Tensor] = {}
        context = dict(context)
        for name in TERMS:
            if name not in self.losses or self.weights[name] == 0:
                continue
            out[name] = self.losses[name](cam_logits, depth_m, tags, **context)
            if name == "boundary":
                context["boundary"] = self.losses[name].last_boundary
        return out
