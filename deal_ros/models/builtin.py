"""The package's own ImageNet MobileNetV2 (``model.pretrained_path: builtin``), so a fresh install works.

``data/mobilenet_v2_imagenet_uint8.safetensors`` (3.6 MB) holds the quantised MobileNetV2 1.0/224 of
google-coral test_data (Apache-2.0, ``data/NOTICE.md``) as it was trained: uint8 weights and int32
biases with one float32 scale and one zero point per tensor, already in torchvision names and layout.
Dequantising, ``real = scale * (q - zero_point)`` in float32, gives exactly the float TF conversion of the same
network, so nothing is lost by storing integers.
``scripts/make_builtin_backbone.py`` regenerates the file from the TFLite original.

Its BatchNorm is folded into the convs (TFLite's form): each BN is weight 1, running_mean 0,
running_var 1 - eps and the stored bias, i.e. an identity plus bias in eval mode. Hence the profile
the config applies for 'builtin' (config.BUILTIN_PROFILE) and frozen BatchNorm.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from ..errors import DealRosError

BUILTIN_FILE = "mobilenet_v2_imagenet_uint8.safetensors"
BUILTIN_SHA256 = "065b8e0af9874867c17c33f5462b386eb436722772327b0f8eae6530eb7599ea"
"""sha256 of the file as written by scripts/make_builtin_backbone.py; checked on every load."""
BUILTIN_FORMAT = "deal_ros.quantized_weights/1"
BUILTIN_DESCRIPTION = "built-in ImageNet MobileNetV2 1.0 (google-coral test_data, uint8, Apache-2.0)"
BN_EPS = 1e-5
"""torchvision's BatchNorm2d eps: running_var = 1 - eps makes var + eps exactly 1 in float32."""


class BuiltinWeightsError(DealRosError, ValueError):
    """The packaged weights file is missing or damaged: reinstalling the package restores it."""


def builtin_weights_path() -> Path:
    """Where the installed package keeps the file (a real path: the package is installed unzipped)."""
    return Path(str(resources.files("deal_ros.models") / "data" / BUILTIN_FILE))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantize(quantized: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{key, key.scale, key.zero_point} -> {key: float32 scale * (q - zero_point)}."""
    out = {}
    for key, q in quantized.items():
        if key.endswith((".scale", ".zero_point")):
            continue
        zero = quantized[key + ".zero_point"].to(torch.float32)
        out[key] = (q.to(torch.float32) - zero) * quantized[key + ".scale"]
    return out


def folded_batchnorm(biases: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm2d entries (weight 1, mean 0, var 1 - eps, count 0) around each folded bias ``<bn>.bias``."""
    out = {}
    for key, bias in biases.items():
        if key.startswith("classifier."):
            continue
        bn = key[: -len(".bias")]
        out[f"{bn}.weight"] = torch.ones_like(bias)
        out[f"{bn}.running_mean"] = torch.zeros_like(bias)
        out[f"{bn}.running_var"] = torch.full_like(bias, 1.0 - BN_EPS)
        out[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    return out


def load_builtin_state_dict(path: Path | None = None) -> tuple[dict[str, torch.Tensor], Path, str]:
    """(torchvision ``mobilenet_v2(num_classes=1001)`` state dict in float32, file, sha256), checksum verified.

    The classifier (``classifier.1.*``, 1001 classes, index 0 = background) is included; CAM networks skip it.
    """
    from safetensors import safe_open

    path = builtin_weights_path() if path is None else path
    if not path.is_file():
        raise BuiltinWeightsError(f"the built-in weights are missing: no file {path} (reinstall deal_ros)")
    sha = file_sha256(path)
    if sha != BUILTIN_SHA256:
        raise BuiltinWeightsError(f"the built-in weights file {path} is damaged: sha256 {sha}, expected "
                                  f"{BUILTIN_SHA256} (reinstall deal_ros)")
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("deal_ros", "{}"))
        quantized = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if meta.get("format") != BUILTIN_FORMAT:
        raise BuiltinWeightsError(f"{path}: format {meta.get('format')!r}, expected {BUILTIN_FORMAT!r}")
    state = dequantize(quantized)
    state.update(folded_batchnorm({k: v for k, v in state.items() if k.endswith(".bias")}))
    return state, path, sha
