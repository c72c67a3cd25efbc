"""The CAM network: backbone + CAM head (K maps) + light segmentation head (K + 1 classes).

The CAM head is a bias-free 1x1 conv on the final feature map, so ``class_logits`` (the spatial
mean of the CAM logits) equals a linear classifier on globally pooled features: the classic CAM,
trained with image-level tags, whose per-pixel logits are the class activation maps. The
segmentation head (DeepLabV3+-lite) learns from pseudo-labels made from those CAMs and predicts at
stride 4 with a background channel at index 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .backbone import Backbone
from .mobilenet_v2 import mobilenet_v2
from .resnet import resnet18, resnet50
from .weights import LoadReport

BACKBONES: dict[str, Callable[[ModelConfig], Backbone]] = {
    "mobilenet_v2": lambda cfg: mobilenet_v2(output_stride=cfg.output_stride,
                                             tf_same_padding=cfg.resolved().padding == "tf_same"),
    "resnet18": lambda cfg: resnet18(output_stride=cfg.output_stride),
    "resnet50": lambda cfg: resnet50(output_stride=cfg.output_stride),
}
"""Backbone name -> builder(cfg) of a feature backbone (no classifier). A backbone provides
``forward_features(x) -> [stride-4, stride-8, final]``, ``out_channels`` (3 ints), ``output_stride``
and ``stages()`` (5 lists of modules, stem first): see :class:`deal_ros.models.backbone.Backbone`."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_input(rgb: Tensor, mode: str = "tf") -> Tensor:
    """(B,3,H,W) RGB, uint8 or float in 0..255 -> float32 network input.

    'tf': pixel/128 - 1 (the built-in, TF-trained MobileNetV2); 'imagenet': torchvision mean/std on
    pixel/255 (torchvision/timm weights). Using the wrong one silently degrades a pretrained backbone.
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (B,3,H,W), got shape {tuple(rgb.shape)}")
    x = rgb.float()
    if mode == "tf":
        return x / 128.0 - 1.0
    if mode == "imagenet":
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x / 255.0 - mean) / std
    raise ValueError(f"input_norm must be 'tf' or 'imagenet', got {mode!r}")


class CAMOutput(NamedTuple):
    """What :meth:`CAMNet.forward` returns (a NamedTuple, so it survives DataParallel/tracing)."""

    cam_logits: Tensor
    """(B,K,h,w) at the final stride (output_stride)."""
    class_logits: Tensor
    """(B,K) = spatial mean of cam_logits (multi-label logits for image-level tags)."""
    seg_logits: Tensor
    """(B,K+1,H/4,W/4); channel 0 = background."""
    features: list[Tensor]
    """Backbone features at strides 4, 8 and final."""


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _separable_conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1: ~8x fewer MACs than a full 3x3 at stride 4, where the head is costly."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        _conv_bn_relu(in_ch, out_ch, 1),
    )


class SegHead(nn.Module):
    """DeepLabV3+-lite: 1x1-reduce the stride-4 and final features, upsample, concat, 2 separable 3x3, classify.

    Cheap on purpose (it runs on the robot every frame): no ASPP, ``channels`` wide, depthwise-separable
    fuse convs (full 3x3 convs here cost 0.47 GMAC at 240x320, 57 % of the MobileNetV2 backbone).
    """

    def __init__(self, low_channels: int, high_channels: int, channels: int, num_outputs: int) -> None:
        super().__init__()
        low_out = max(channels // 2, 8)
        self.reduce_low = _conv_bn_relu(low_channels, low_out, 1)
        self.reduce_high = _conv_bn_relu(high_channels, channels, 1)
        self.fuse = nn.Sequential(_separable_conv_bn_relu(channels + low_out, channels),
                                  _separable_conv_bn_relu(channels, channels))
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        """low (B,Cl,H/4,W/4), high (B,Ch,h,w) -> (B,num_outputs,H/4,W/4)."""
        low = self.reduce_low(low)
        high = F.interpolate(self.reduce_high(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))


class CAMNet(nn.Module):
    """Backbone + ``cam_head`` (Conv2d(C_final, K, 1, bias=False)) + ``seg_head`` (K + 1 outputs).

    Freezing (applied at construction and kept by :meth:`train`):
      * ``cfg.freeze_stages = N``: parameters of backbone stages 0..N-1 get ``requires_grad=False``
        and those modules stay in eval mode (a frozen stage must not drift through BN statistics).
        Stages are defined in each backbone's module docstring (stage 0 = stem; 5 = whole backbone).
      * ``cfg.freeze_bn``: every backbone BatchNorm stays in eval mode, even after ``model.train()``,
        and its affine parameters are frozen. Needed for the folded-BN built-in weights, and wise for
        small-batch online fine-tuning of pretrained ones; never for random init (frozen initial
        statistics leave the features near zero), which ``cfg.resolved()`` sees to.

    ``self.cfg`` is ``cfg.resolved()``: input normalisation, padding and freeze_bn as the weights need them.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        cfg.validate()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg.resolved()
        self.num_classes = num_classes
        self.backbone: Backbone = BACKBONES[cfg.backbone](self.cfg)
        c_low, _, c_final = self.backbone.out_channels
        self.cam_head = nn.Conv2d(c_final, num_classes, 1, bias=False)
        nn.init.normal_(self.cam_head.weight, 0.0, 0.01)  # small logits at start: BCE starts near log 2
        self.seg_head = SegHead(c_low, c_final, cfg.seg_head_channels, num_classes + 1)
        for m in self.seg_head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.load_report: LoadReport | None = None
        """The ``LoadReport`` of ``cfg.pretrained_path`` when built by ``build_cam_net``."""
        self._apply_freezing()
        self.train(self.training)

    # -- freezing -------------------------------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        return [m for stage in self.backbone.stages()[: self.cfg.freeze_stages] for m in stage]

    def _backbone_bns(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _apply_freezing(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        if self.cfg.freeze_bn:
            for bn in self._backbone_bns():
                for p in bn.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> CAMNet:
        """Like ``nn.Module.train``, but frozen stages and (with freeze_bn) backbone BNs stay in eval."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.cfg.freeze_bn:
                for bn in self._backbone_bns():
                    bn.eval()
        return self

    # -- forward --------------------------------------------------------------------------------------------
    def normalize_input(self, rgb: Tensor) -> Tensor:
        """(B,3,H,W) RGB uint8/float 0..255 -> float input, per ``cfg.input_norm``."""
        return normalize_input(rgb, self.cfg.input_norm)

    def forward(self, x: Tensor) -> CAMOutput:
        """x: (B,3,H,W) normalised float (see :meth:`normalize_input`) -> :class:`CAMOutput`.

        With H, W multiples of 16 (config-enforced): cam (B,K,H/os,W/os), seg (B,K+1,H/4,W/4).
        """
        features = self.backbone.forward_features(x)
        cam_logits = self.cam_head(features[-1])
        class_logits = cam_logits.mean(dim=(2, 3))
        if self.cfg.seg_head_detach:  # the head learns from pseudo-labels without reshaping the CAM features
            seg_logits = self.seg_head(features[0].detach(), features[-1].detach())
        else:
            seg_logits = self.seg_head(features[0], features[-1])
        return CAMOutput(cam_logits, class_logits, seg_logits, features)

    # -- optimisation ---------------------------------------------------------------------------------------
    def param_groups(self, lr: float, backbone_lr_scale: float) -> list[dict[str, Any]]:
        """Optimiser groups: backbone at ``lr * backbone_lr_scale``, heads at ``lr``.

        Only parameters with ``requires_grad`` are included; empty groups are dropped. Each group
        has a 'name' ('backbone' or 'heads') for logging and schedulers.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        heads = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups = [
            {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_scale},
            {"name": "heads", "params": heads, "lr": lr},
        ]
        return [g for g in groups if g["params"]]
