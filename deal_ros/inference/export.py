"""ONNX export of the segmenter's network, for TensorRT and Isaac ROS; parity with onnxruntime.

The graph is what :class:`deal_ros.inference.segmenter.Segmenter` runs on a frame already resized to the network
input: input normalisation, the CAM network, the segmentation head upsampled to the input size, softmax.

    input   image          float32 (N, 3, H, W), RGB, pixel / 255 in [0, 1]
    output  probabilities  float32 (N, K + 1, H, W), softmax over the classes, channel 0 = background
            mask           int32   (N, H, W), argmax class id (0 = background, k = classes[k - 1])
            confidence     float32 (N, H, W), the probability of the mask's class
            cams           float32 (N, K, H / os, W / os), raw CAM logits (only with ``cams=True``)

H, W are the configured network input size; with ``dynamic=True`` batch, height and width are free, but the
TF 'SAME' padding of the stride-2 convolutions is fixed at export, so other sizes must divide the same way:
multiples of 16 (32 with output_stride 32), as the configuration requires anyway. A sidecar JSON beside the
model names the classes, the input, the normalisation and the checkpoint step. Both are written atomically
(deal_ros.storage.files) after a free-space check: a failed export leaves the previous files intact.

onnx and onnxruntime are optional (``pip install deal_ros[export]``): the robot install never needs them.
torch exports with its TorchScript-based exporter, which needs neither.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError, OutputError, os_error_cause
from deal_ros.models import CAMNet
from deal_ros.storage.checkpoint import load_checkpoint, load_model_state
from deal_ros.storage.files import atomic_write, atomic_write_text, check_free_space

DEFAULT_OPSET = 17
"""ONNX opset of the export: TensorRT 8.5+ (JetPack 5 and later) parses it."""
ONNX_OVERHEAD_BYTES = 1_000_000
"""Graph and names on top of the weights, for the free-space check."""
OPSETS = range(11, 21)
"""Opsets the network exports exactly at, checked before exporting (torch's exporter prints the whole graph,
~300 KB, before failing): from 11 (Resize with PyTorch's interpolation modes; 9-10 only approximate the
bilinear upsampling, below 9 it does not export) to 20, the highest of torch's TorchScript exporter."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "mask", "confidence")
CAMS_NAME = "cams"
NORMALISATION = {
    "tf": "x = image * 255 / 128 - 1 (TF-trained MobileNetV2)",
    "imagenet": "x = (image - mean) / std, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)",
}


class ExportError(DealRosError, RuntimeError):
    """The export, or its check with onnxruntime, failed; the message says which and why."""


class SegmenterGraph(nn.Module):
    """The exported function: image in [0, 1] -> probabilities, mask, confidence (and CAMs)."""

    def __init__(self, model: CAMNet, cams: bool = False) -> None:
        super().__init__()
        self.model = model
        self.cams = cams

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(self.model.normalize_input(image * 255.0))
        logits = F.interpolate(out.seg_logits.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        probabilities = torch.softmax(logits, dim=1)
        confidence, mask = probabilities.max(dim=1)
        outputs = (probabilities, mask.to(torch.int32), confidence)
        return (*outputs, out.cam_logits.float()) if self.cams else outputs


def model_from_checkpoint(path: str | Path) -> tuple[CAMNet, DealRosConfig, int]:
    """The CAM network of a checkpoint on the CPU in eval mode (no ImageNet file needed), its config and step."""
    ckpt = load_checkpoint(path)
    cfg = ckpt.config
    model = CAMNet(cfg.model, cfg.num_classes)
    load_model_state(model, ckpt.model_state, path)
    return model.eval(), cfg, ckpt.step


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    export_s: float


def export_onnx(checkpoint: str | Path, onnx_path: str | Path, *, height: int | None = None, width: int | None = None,
                dynamic: bool = False, cams: bool = False, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Write the segmenter network of `checkpoint` to `onnx_path` and its sidecar JSON (onnx_path + '.json').

    height, width: the input size (default: the configured network input size); multiples of 16.
    """
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported: give {OPSETS[0]} to {OPSETS[-1]} "
                          f"(default {DEFAULT_OPSET}, which TensorRT 8.5+ parses)")
    model, cfg, step = model_from_checkpoint(checkpoint)
    height = cfg.model.input_height if height is None else height
    width = cfg.model.input_width if width is None else width
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise ExportError(f"input size {height}x{width}: height and width must be multiples of 16 (>= 16)")
    onnx_path = Path(onnx_path)
    output_names = [*OUTPUT_NAMES, CAMS_NAME] if cams else list(OUTPUT_NAMES)
    dynamic_axes = None
    if dynamic:
        image_axes = {0: "batch", 2: "height", 3: "width"}
        map_axes = {0: "batch", 1: "height", 2: "width"}
        dynamic_axes = {INPUT_NAME: image_axes, "probabilities": image_axes, "mask": map_axes, "confidence": map_axes}
        if cams:
            dynamic_axes[CAMS_NAME] = {0: "batch", 2: "cam_height", 3: "cam_width"}
    graph = SegmenterGraph(model, cams).eval()
    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    check_free_space(onnx_path.parent, weight_bytes + ONNX_OVERHEAD_BYTES, "folder", f"the ONNX model {onnx_path}")
    start = time.perf_counter()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # The TF 'SAME' pads are computed from the traced size: constant for every size allowed (see above).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # The exporter's own notes (a Slice it cannot fold, its deprecation): nothing for the user to do.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
            torch.onnx.export(graph, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=dynamic_axes)

    kept = "the file there is unchanged" if onnx_path.exists() else "nothing was written"
    try:
        atomic_write(onnx_path, write, suffix=".onnx")
    except OSError as exc:  # a full disk, a file size limit: the temporary is gone, the old model intact
        raise OutputError(f"cannot write {onnx_path}: {os_error_cause(exc)}; {kept}") from None
    except Exception as exc:  # the exporter raises many types (unsupported op, opset)
        raise ExportError(f"torch.onnx.export to {onnx_path} failed at opset {opset}: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    export_s = time.perf_counter() - start
    sidecar = sidecar_dict(cfg, step, checkpoint, onnx_path, height, width, dynamic, cams, opset)
    sidecar_path = onnx_path.with_name(onnx_path.name + ".json")
    try:
        atomic_write_text(sidecar_path, json.dumps(sidecar, indent=1) + "\n")
    except OSError as exc:
        raise OutputError(f"wrote {onnx_path} but cannot write {sidecar_path}: {os_error_cause(exc)}") from None
    return ExportResult(onnx_path, sidecar_path, sidecar, export_s)


def sidecar_dict(cfg: DealRosConfig, step: int, checkpoint: str | Path, onnx_path: Path, height: int, width: int,
                 dynamic: bool, cams: bool, opset: int) -> dict[str, Any]:
    """What a consumer of the ONNX file needs: class ids, input layout and range, normalisation, provenance."""
    model_cfg = cfg.model.resolved()
    classes = ["background", *cfg.classes]
    outputs: dict[str, Any] = {
        "probabilities": {"dtype": "float32", "shape": ["N", len(classes), height, width],
                          "meaning": "softmax over the classes; channel i = classes[i]"},
        "mask": {"dtype": "int32", "shape": ["N", height, width], "meaning": "argmax class id (index into classes)"},
        "confidence": {"dtype": "float32", "shape": ["N", height, width],
                       "meaning": "probability of the mask's class"},
    }
    if cams:
        stride = model_cfg.output_stride
        outputs[CAMS_NAME] = {"dtype": "float32", "shape": ["N", cfg.num_classes, -(-height // stride),
                                                            -(-width // stride)],
                              "meaning": "raw class activation maps (logits) of the foreground classes, "
                                         "channel j = classes[j + 1]"}
    return {
        "format": "deal_ros segmenter onnx 1",
        "onnx": onnx_path.name,
        "opset": opset,
        "classes": classes,
        "class_ids": {name: index for index, name in enumerate(classes)},
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "color": "RGB", "range": [0.0, 1.0],
                  "value": "pixel / 255", "height": height, "width": width, "dynamic": dynamic,
                  "resize": "resize the camera frame to height x width first (area for downscaling)"},
        "normalisation": {"name": model_cfg.input_norm, "inside_graph": True,
                          "formula": NORMALISATION[model_cfg.input_norm]},
        "outputs": outputs,
        "backbone": model_cfg.backbone,
        "output_stride": model_cfg.output_stride,
        "checkpoint": {"path": str(checkpoint), "step": step, "architecture_hash": cfg.architecture_hash()},
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------------------
# Parity and speed with onnxruntime (optional dependency)


def onnxruntime_session(onnx_path: str | Path, providers: list[str] | None = None) -> Any:
    """An onnxruntime InferenceSession; ExportError when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'deal_ros[export]'") from None
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)


@dataclass
class Parity:
    frames: int
    max_probability_diff: float
    argmax_agreement: float
    """Fraction of pixels where torch and onnxruntime pick the same class."""

    @property
    def ok(self) -> bool:
        return self.max_probability_diff <= PARITY_MAX_DIFF and self.argmax_agreement >= PARITY_MIN_AGREEMENT

    def format(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (f"onnxruntime vs torch on {self.frames} frame(s): max |probability diff| "
                f"{self.max_probability_diff:.2e} (<= {PARITY_MAX_DIFF:g}), "
                f"same argmax on {self.argmax_agreement * 100:.3f} % of pixels "
                f"(>= {PARITY_MIN_AGREEMENT * 100:g} %): {verdict}")


PARITY_MAX_DIFF = 1e-4
PARITY_MIN_AGREEMENT = 0.999


def network_input(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """A camera frame (H, W, 3) uint8 -> the ONNX input (1, 3, height, width) float32 in [0, 1], resized as the
    segmenter resizes it."""
    import cv2

    shrink = rgb.shape[0] > height  # as the segmenter: area averaging when shrinking (antialiased)
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def check_parity(onnx_path: str | Path, model: CAMNet, frames: list[np.ndarray], height: int, width: int,
                 session: Any = None) -> Parity:
    """Probabilities of onnxruntime vs the torch network on the same resized frames (uint8 RGB, any size)."""
    session = session or onnxruntime_session(onnx_path)
    graph = SegmenterGraph(model).eval()
    worst, same, total = 0.0, 0, 0
    for rgb in frames:
        x = network_input(rgb, height, width)
        with torch.no_grad():
            want = graph(torch.from_numpy(x))[0].numpy()
        got = session.run(["probabilities"], {INPUT_NAME: x})[0]
        worst = max(worst, float(np.abs(got - want).max()))
        same += int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
        total += got.shape[0] * got.shape[2] * got.shape[3]
    return Parity(len(frames), worst, same / max(total, 1))


def frame_times(model: CAMNet, cfg: DealRosConfig, session: Any, height: int, width: int, repeat: int = 10,
                frame_size: tuple[int, int] = (480, 640)) -> tuple[float, float]:
    """Median seconds per camera frame (default 640x480): the torch Segmenter (on the model's device) vs
    onnxruntime doing the same host steps (resize in, network, mask and confidence resized to the frame)."""
    import cv2

    from deal_ros.inference.segmenter import Segmenter

    frame_h, frame_w = frame_size
    rgb = np.random.default_rng(0).integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8)
    segmenter = Segmenter(cfg, model=model)

    def with_onnxruntime() -> None:
        _, mask, confidence = session.run(list(OUTPUT_NAMES), {INPUT_NAME: network_input(rgb, height, width)})
        cv2.resize(mask[0].astype(np.uint8), (frame_w, frame_h), interpolation=cv2.INTER_NEAREST_EXACT)
        cv2.resize(confidence[0], (frame_w, frame_h), interpolation=cv2.INTER_LINEAR)

    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for index in range(repeat + 2):  # interleaved; the first two rounds warm up
        for name, fn in (("torch", lambda: segmenter(rgb)), ("onnxruntime", with_onnxruntime)):
            start = time.perf_counter()
            fn()
            if index >= 2:
                times[name].append(time.perf_counter() - start)
    return float(np.median(times["torch"])), float(np.median(times["onnxruntime"]))
