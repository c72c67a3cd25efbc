"""CAM networks (backbones with torchvision names, CAM + segmentation heads) and weight loading.

Public API:
    build_cam_net(cfg, num_classes) -> CAMNet      the model from a ModelConfig (+ pretrained weights)
    CAMNet, CAMOutput, normalize_input             the model, its output, input normalisation
    BACKBONES                                      registry: name -> builder(cfg) of a feature backbone
    load_pretrained(backbone, path) -> LoadReport  local torchvision-layout weights, loudly checked
    WeightsError                                   raised for any unusable weights file
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from .cam_net import BACKBONES, CAMNet, CAMOutput, SegHead, normalize_input
from .mobilenet_v2 import MobileNetV2, mobilenet_v2, tf_same_pad
from .resnet import ResNet, resnet18, resnet50

__all__ = [
    "BACKBONES",
    "CAMNet",
    "CAMOutput",
    "LoadReport",
    "MobileNetV2",
    "ResNet",
    "SegHead",
    "WeightsError",
    "build_cam_net",
    "load_pretrained",
    "mobilenet_v2",
    "normalize_input",
    "resnet18",
    "resnet50",
    "tf_same_pad",
]

log = logging.getLogger(__name__)

_CLASSIFIER_PREFIXES = ("classifier.", "fc.")


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the model; the message names the file."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. Key lists are sorted."""

    path: str
    loaded: list[str] = field(default_factory=list)
    """Keys copied into the model."""
    missing: list[str] = field(default_factory=list)
    """Model keys the file lacks (they keep their initialisation); ``num_batches_tracked`` not counted."""
    unexpected: list[str] = field(default_factory=list)
    """File keys the model does not have (ignored)."""
    ignored: list[str] = field(default_factory=list)
    """Classifier keys (``classifier.*``, ``fc.*``) skipped because the model has no classifier."""

    def __str__(self) -> str:
        text = (
            f"{self.path}: loaded {len(self.loaded)} tensors, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.ignored)} classifier keys ignored"
        )
        if self.missing:
            text += f"; missing e.g. {self.missing[:5]}"
        if self.unexpected:
            text += f"; unexpected e.g. {self.unexpected[:5]}"
        return text


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors (by suffix or magic) or a torch file read with weights_only=True (no pickle code)."""
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: 8-byte little-endian header length, then the JSON header starting with '{'.
    is_safetensors = path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")
    try:
        if is_safetensors:
            from safetensors.torch import load_file

            data: object = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        how = (
            "as safetensors"
            if is_safetensors
            else "with torch.load(weights_only=True), which also refuses pickled objects other than tensors"
        )
        raise WeightsError(
            f"weights file {path} is truncated or corrupt: could not read it {how} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if key in data and isinstance(data[key], Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(data).__name__}, not a state dict")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file {path} is not a flat state dict of tensors (e.g. key {bad[0]!r})")
    state = dict(data)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def load_pretrained(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Copy a local torchvision-layout state dict (safetensors or torch) into ``backbone``.

    Classifier keys are skipped when the model has no classifier; other differences are reported
    (and logged). Raises :class:`WeightsError` naming the file when it is missing, truncated or
    corrupt, holds non-finite values, has shapes that do not fit (wrong architecture), or shares
    no key with the model, so a typo or a wrong file never silently leaves random weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"pretrained weights not found: {path} (no file at this path)")
    state = _read_state_dict(path)
    target = backbone.state_dict()
    arch = type(backbone).__name__
    if not state:
        raise WeightsError(f"weights file {path} contains no tensors")

    report = LoadReport(path=str(path))
    has_classifier = any(k.startswith(_CLASSIFIER_PREFIXES) for k in target)
    usable: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if key not in target:
            if key.startswith(_CLASSIFIER_PREFIXES) and not has_classifier:
                report.ignored.append(key)
            else:
                report.unexpected.append(key)
        elif value.shape != target[key].shape:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target[key].shape)}")
        else:
            usable[key] = value
    if mismatched:
        raise WeightsError(
            f"weights file {path} does not fit {arch} (wrong architecture or width?): {len(mismatched)} "
            f"shape mismatches, e.g. {'; '.join(mismatched[:4])}"
        )
    if not usable:
        raise WeightsError(
            f"weights file {path} shares no parameter name with {arch} (wrong architecture or naming?): "
            f"file keys look like {_examples(state)}, the model expects {_examples(target)}"
        )
    nonfinite = [k for k, v in usable.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise WeightsError(f"weights file {path} has NaN/inf values in {nonfinite[:4]}")

    backbone.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = sorted(k for k in target if k not in usable and not k.endswith("num_batches_tracked"))
    report.unexpected.sort()
    report.ignored.sort()
    if report.missing or report.unexpected:
        log.warning("partial pretrained load into %s: %s", arch, report)
    else:
        log.info("pretrained load into %s: %s", arch, report)
    return report


def _examples(keys: Mapping[str, object]) -> list[str]:
    """A few keys to show in an error, weights first (they say more than BN buffers)."""
    weights = sorted(k for k in keys if k.endswith(".weight"))
    return (weights or sorted(keys))[:3]


def build_cam_net(cfg: ModelConfig, num_classes: int) -> CAMNet:
    """The CAM network for ``cfg`` with ``num_classes`` foreground classes (K), on CPU.

    Loads ``cfg.pretrained_path`` into the backbone when it is non-empty (raising
    :class:`WeightsError` if that fails); the report is kept as ``model.load_report``.
    """
    model = CAMNet(cfg, num_classes)
    if cfg.pretrained_path:
        report = load_pretrained(model.backbone, cfg.pretrained_path)
        model.load_report = report
        if not cfg.freeze_bn and _looks_bn_folded(model.backbone):
            log.warning(
                "%s has folded BatchNorm (running_mean = 0, running_var = 1 - eps everywhere) but "
                "model.freeze_bn is false: training-mode BN will change what the pretrained network computes",
                cfg.pretrained_path,
            )
    return model


def _looks_bn_folded(backbone: nn.Module) -> bool:
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(bns) and all(
        bool((m.running_mean == 0).all()) and bool((m.running_var + m.eps - 1.0).abs().max() < 1e-6)
        for m in bns
        if m.running_mean is not None and m.running_var is not None
    )
