"""CAM networks (backbones with torchvision names, CAM + segmentation heads) and weight loading.

Public API:
    build_cam_net(cfg, num_classes) -> CAMNet      the model from a ModelConfig (+ pretrained weights)
    CAMNet, CAMOutput, normalize_input             the model, its output, input normalisation
    BACKBONES                                      registry: name -> builder(cfg) of a feature backbone
    load_pretrained(backbone, source) -> LoadReport  'builtin' or a local torchvision/timm file, loudly checked
    load_builtin_state_dict()                      the packaged ImageNet MobileNetV2 (checksum verified)
    WeightsError                                   raised for any unusable weights file
"""

from __future__ import annotations

import logging

from ..config import BUILTIN_WEIGHTS, ModelConfig
from .builtin import BUILTIN_SHA256, builtin_weights_path, load_builtin_state_dict
from .cam_net import BACKBONES, CAMNet, CAMOutput, SegHead, normalize_input
from .mobilenet_v2 import MobileNetV2, mobilenet_v2, tf_same_pad
from .resnet import ResNet, resnet18, resnet50
from .weights import LoadReport, WeightsError, find_weights_file, has_folded_batchnorm, load_pretrained

__all__ = [
    "BACKBONES",
    "BUILTIN_SHA256",
    "CAMNet",
    "CAMOutput",
    "LoadReport",
    "MobileNetV2",
    "ResNet",
    "SegHead",
    "WeightsError",
    "build_cam_net",
    "builtin_weights_path",
    "describe_weights",
    "find_weights_file",
    "load_builtin_state_dict",
    "load_pretrained",
    "mobilenet_v2",
    "normalize_input",
    "resnet18",
    "resnet50",
    "tf_same_pad",
]

log = logging.getLogger(__name__)


def build_cam_net(cfg: ModelConfig, num_classes: int) -> CAMNet:
    """The CAM network for ``cfg`` with ``num_classes`` foreground classes (K), on CPU.

    Loads ``cfg.pretrained_path`` ('builtin' by default) into the backbone unless it is empty, raising
    :class:`WeightsError` if that fails or the file needs other settings than ``cfg`` resolves to; the
    report is kept as ``model.load_report``. ``model.cfg`` is ``cfg.resolved()`` (no 'auto' left).
    """
    model = CAMNet(cfg, num_classes)
    if not cfg.pretrained_path:
        log.info("backbone weights: random init (model.pretrained_path is ''); BatchNorm trains")
        return model
    report = load_pretrained(model.backbone, cfg.pretrained_path, architecture=cfg.backbone)
    model.load_report = report
    if cfg.pretrained_path != BUILTIN_WEIGHTS and has_folded_batchnorm(model.backbone):
        _check_folded_file(model.cfg, report.path)
    return model


def _check_folded_file(cfg: ModelConfig, path: str) -> None:
    """A file with folded BatchNorm is a TF conversion: it needs TF input/padding and frozen BN, never 'auto'."""
    wrong = [f"model.{key}: {getattr(cfg, key)!r} (needs {needed!r})"
             for key, needed in (("input_norm", "tf"), ("padding", "tf_same")) if getattr(cfg, key) != needed]
    if not cfg.freeze_bn:
        wrong.append("model.freeze_bn: false (needs true)")
    if wrong:
        raise WeightsError(
            f"weights file {path} has folded BatchNorm (running_mean 0, running_var 1 - eps everywhere): a "
            f"TF conversion, not a torchvision/timm file, and does not fit {', '.join(wrong)} (set those, or "
            f"use model.pretrained_path: builtin if it is a TF conversion of MobileNetV2 1.0/224)"
        )


def describe_weights(model: CAMNet) -> str:
    """One line saying which weights ``model`` started from (for logs and reports)."""
    if model.load_report is not None:
        return str(model.load_report)
    return "random init" if not model.cfg.pretrained_path else f"not loaded ({model.cfg.pretrained_path!r})"
