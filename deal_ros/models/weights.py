"""ImageNet weights into a backbone: the built-in MobileNetV2, or a local torchvision/timm file, loudly checked.

Why so many checks: a wrong or mismatched file does not crash, it silently trains a worse model. So
every load says which file (path, sha256) and how many tensors it filled, and refuses files that do
not fit (other architecture, shapes, no shared key, NaN, folded BatchNorm with settings that break it),
naming what does not fit. Nothing is ever downloaded: a bare file name is looked up in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``), where torchvision and timm keep what they downloaded before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import BUILTIN_WEIGHTS, ConfigError
from .builtin import BUILTIN_DESCRIPTION, BuiltinWeightsError, file_sha256, load_builtin_state_dict

log = logging.getLogger(__name__)

_CLASSIFIER_PREFIXES = ("classifier.", "fc.")

ARCHITECTURE_NAMES = {"mobilenet_v2": "MobileNetV2", "resnet18": "ResNet-18", "resnet34": "ResNet-34",
                      "resnet50": "ResNet-50", "resnet101": "ResNet-101", "resnet152": "ResNet-152"}
"""Architectures recognised in a state dict (by :func:`guess_architecture`) -> display name."""


class WeightsError(ConfigError):
    """A weights file is missing, unreadable, or does not fit the model; the message names the file.

    A ConfigError: the fix is always in ``model.*`` (another file, backbone or setting).
    """


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. Key lists are sorted."""

    path: str
    """The file read (for 'builtin', the packaged file)."""
    sha256: str = ""
    source: str = "file"
    """'builtin' or 'file'."""
    layout: str = "torchvision"
    """Key layout of the file: 'torchvision', or 'timm' (renamed to torchvision names on load)."""
    loaded: list[str] = field(default_factory=list)
    """Keys copied into the model."""
    missing: list[str] = field(default_factory=list)
    """Model keys the file lacks (they keep their initialisation); ``num_batches_tracked`` not counted."""
    unexpected: list[str] = field(default_factory=list)
    """File keys the model does not have (ignored)."""
    ignored: list[str] = field(default_factory=list)
    """Classifier keys (``classifier.*``, ``fc.*``) skipped because the model has no classifier."""

    def __str__(self) -> str:
        what = BUILTIN_DESCRIPTION if self.source == "builtin" else f"{self.layout} weights"
        text = (
            f"{what} from {self.path} (sha256 {self.sha256[:16]}): loaded {len(self.loaded)} tensors, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored)} classifier keys ignored"
        )
        if self.missing:
            text += f"; missing e.g. {self.missing[:5]}"
        if self.unexpected:
            text += f"; unexpected e.g. {self.unexpected[:5]}"
        return text


def find_weights_file(name: str) -> Path:
    """A path as given, else a bare file name in the torch hub cache; WeightsError naming both places if absent."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if path.name == name and (hub / name).is_file():
        return hub / name
    where = f"no file at this path, nor {hub / path.name}" if path.name == name else "no file at this path"
    raise WeightsError(f"pretrained weights not found: {path} ({where}; nothing is downloaded: give the path "
                       f"of a local file, 'builtin' for the package's MobileNetV2, or '' for random init)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
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


_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)")
_TIMM_DS = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
_TIMM_IR = {"conv_pw": "conv.0.0", "bn1": "conv.0.1", "conv_dw": "conv.1.0", "bn2": "conv.1.1",
            "conv_pwl": "conv.2", "bn3": "conv.3"}
_TIMM_TOP = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.18.0",
             "bn2": "features.18.1", "classifier": "classifier.1"}


def is_timm_mobilenet_v2(state: Mapping[str, torch.Tensor]) -> bool:
    """timm's ``mobilenetv2_100`` (EfficientNet-style names: conv_stem, blocks.S.I.conv_dw, conv_head)."""
    return "conv_stem.weight" in state and "blocks.0.0.conv_dw.weight" in state


def timm_mobilenet_v2_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm ``mobilenetv2_100`` keys to torchvision's; unknown keys are kept (and reported unexpected).

    Same network: timm's blocks (stage S, block I) flattened in order are torchvision's features.1-17, its
    first stage a depthwise-separable block (conv_dw, bn1, conv_pw, bn2), the others inverted residuals.
    """
    blocks = sorted({(int(m[1]), int(m[2])) for k in state if (m := _TIMM_BLOCK.fullmatch(k))})
    index = {block: i + 1 for i, block in enumerate(blocks)}
    out = {}
    for key, value in state.items():
        if m := _TIMM_BLOCK.fullmatch(key):
            stage, block, module, rest = int(m[1]), int(m[2]), m[3], m[4]
            table = _TIMM_DS if stage == 0 else _TIMM_IR
            if module in table:
                key = f"features.{index[(stage, block)]}.{table[module]}.{rest}"
        else:
            module, _, rest = key.partition(".")
            if module in _TIMM_TOP:
                key = f"{_TIMM_TOP[module]}.{rest}"
        out[key] = value
    return out


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Registry-style name of the network a torchvision-layout state dict belongs to, or None if unknown."""
    if "features.18.0.weight" in state and "features.17.conv.2.weight" in state:
        return "mobilenet_v2"
    blocks: dict[int, int] = {}  # layer -> number of blocks
    for key in state:
        if m := re.fullmatch(r"layer(\d)\.(\d+)\..+", key):
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    if len(blocks) != 4:
        return None
    bottleneck = "layer1.0.conv3.weight" in state
    depths = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, False): "resnet34", (3, 4, 6, 3, True): "resnet50",
              (3, 4, 23, 3, True): "resnet101", (3, 8, 36, 3, True): "resnet152"}
    return depths.get((blocks[1], blocks[2], blocks[3], blocks[4], bottleneck))


def load_pretrained(backbone: nn.Module, path: str | Path, architecture: str | None = None) -> LoadReport:
    """Copy ImageNet weights into ``backbone``: ``'builtin'`` or a local torchvision/timm-layout state dict.

    ``architecture`` (a registry name such as 'resnet18'), when given, is checked against the network the
    file holds. Classifier keys are skipped when the model has no classifier; other differences are
    reported (and logged). Raises :class:`WeightsError` naming the file when it is missing, truncated or
    corrupt, holds non-finite values or another architecture, has shapes that do not fit, or shares no key
    with the model, so a typo or a wrong file never silently leaves random weights.
    """
    if str(path) == BUILTIN_WEIGHTS:
        try:
            state, file, sha = load_builtin_state_dict()
        except BuiltinWeightsError as exc:
            raise WeightsError(str(exc)) from None
        report = LoadReport(path=str(file), sha256=sha, source="builtin")
        return _copy_into(backbone, state, report, architecture)
    file = find_weights_file(str(path))
    state = read_state_dict(file)
    report = LoadReport(path=str(file), sha256=file_sha256(file))
    if is_timm_mobilenet_v2(state):
        state = timm_mobilenet_v2_to_torchvision(state)
        report.layout = "timm"
    return _copy_into(backbone, state, report, architecture)


def _copy_into(backbone: nn.Module, state: dict[str, torch.Tensor], report: LoadReport,
               architecture: str | None) -> LoadReport:
    path = report.path
    target = backbone.state_dict()
    arch = type(backbone).__name__
    if not state:
        raise WeightsError(f"weights file {path} contains no tensors")
    held = guess_architecture(state)
    if architecture is not None and held is not None and held != architecture:
        fix = (f"set model.backbone: {held}" if held in ("mobilenet_v2", "resnet18", "resnet50")
               else "deal_ros has backbones mobilenet_v2, resnet18 and resnet50 only")
        raise WeightsError(f"weights file {path} holds a {ARCHITECTURE_NAMES[held]} but model.backbone is "
                           f"{architecture} ({fix})")

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


def has_folded_batchnorm(backbone: nn.Module) -> bool:
    """Every BatchNorm is an identity plus bias (running_mean 0, running_var 1 - eps): TF-converted weights."""
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(bns) and all(
        bool((m.running_mean == 0).all()) and bool((m.running_var + m.eps - 1.0).abs().max() < 1e-6)
        for m in bns
        if m.running_mean is not None and m.running_var is not None
    )
